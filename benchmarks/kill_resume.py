"""Kill `medpfgm train` with SIGKILL at random moments, resume each time, and compare with an unbroken run.

    python benchmarks/kill_resume.py [--kills 20] [--steps 60] [--seed 0] [--out reports/reliability/kill_resume.json]

A tiny recipe (the test suite's UNet) checkpoints at every step; every other kill comes at a random
moment, the others the instant a checkpoint's temporary file appears, i.e. in the middle of a write
(counted: a temporary file left beside the checkpoint). After each kill the run is
restarted, with `--resume` once a checkpoint exists; every restart must succeed. The finished run's
checkpoint (weights, EMA, optimizer, random states) and its log must equal those of one unbroken run of
the same length bit for bit (same machine, same threads). The result file says how many of the kills
were followed by an exact, successful resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medpfgm.evaluate.pipeline import machine  # noqa: E402
from medpfgm.io import write_json  # noqa: E402

RECIPE = (ROOT / "recipes" / "tiny.toml").read_text().replace('method = "pfgm"', 'method = "pfgmpp"').replace("checkpoint_every = 3", "checkpoint_every = 1")


def train_command(recipe: Path, run: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "medpfgm.cli", "train", "--recipe", str(recipe), "--run", str(run), "--quiet", "--device", "cpu"]
    return args + (["--resume"] if resume else [])


def log_lines(run: Path) -> int:
    return len((run / "log.jsonl").read_text().splitlines()) if (run / "log.jsonl").is_file() else 0


def checkpoint_step(run: Path) -> int:
    path = run / "checkpoints" / "last.pt"
    return int(torch.load(path, weights_only=True)["step"]) if path.is_file() else 0


def same_state(a: object, b: object) -> bool:
    """Bit-for-bit equality of two checkpoint states (nested dicts, lists, tensors, numbers, strings)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def comparable(state: dict) -> dict:
    """A checkpoint without what legitimately differs between a broken and an unbroken run (wall time)."""
    return {k: v for k, v in state.items() if k != "train_seconds"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/medpfgm_kill_resume"))
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "reliability" / "kill_resume.json")
    args = p.parse_args()
    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    recipe = args.work / "tiny.toml"
    recipe.write_text(RECIPE.replace("steps = 6", f"steps = {args.steps}", 1))
    unbroken, broken = args.work / "unbroken", args.work / "broken"
    for folder in (unbroken, broken):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    t0 = time.time()
    subprocess.run(train_command(recipe, unbroken, False), check=True, capture_output=True)
    events, failures = [], []
    for k in range(args.kills):
        before = log_lines(broken)
        proc = subprocess.Popen(train_command(recipe, broken, (broken / "checkpoints" / "last.pt").is_file()), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while log_lines(broken) <= before and proc.poll() is None:  # wait for progress, then kill within ~a step or two
            time.sleep(0.02)
        if k % 2:  # every other kill aims at a checkpoint write: as soon as its temporary file appears
            deadline = time.time() + 5
            while not any((broken / "checkpoints").glob(".*.tmp")) and time.time() < deadline and proc.poll() is None:
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        _, err = proc.communicate()
        finished = proc.returncode == 0
        if proc.returncode not in (0, -9):
            failures.append(f"restart {k}: exit {proc.returncode}: {err.decode().strip()[-300:]}")
        in_write = any((broken / "checkpoints").glob(".*.tmp"))  # left by the kill; the next start removes it
        events.append({"kill": k, "checkpoint_step": checkpoint_step(broken), "log_lines": log_lines(broken), "during_checkpoint_write": in_write, "finished_before_kill": finished})
        print(f"kill {k + 1}/{args.kills}: checkpoint at step {events[-1]['checkpoint_step']}{' (during a checkpoint write)' if in_write else ''}", flush=True)
        if finished:
            break
    done = subprocess.run(train_command(recipe, broken, (broken / "checkpoints" / "last.pt").is_file()), capture_output=True, text=True)
    if done.returncode != 0 and "already" not in done.stderr:
        failures.append(f"final resume: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    a = torch.load(unbroken / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)
    log_a, log_b = ([{k: v for k, v in json.loads(line).items() if k != "train_seconds"} for line in (f / "log.jsonl").read_text().splitlines()] for f in (unbroken, broken))
    exact = same_state(comparable(a), comparable(b)) and log_a == log_b
    kills = len([e for e in events if not e["finished_before_kill"]])
    result = {
        "kills": kills,
        "during_checkpoint_write": sum(e["during_checkpoint_write"] for e in events),
        "restarts_failed": len(failures),
        "failures": failures,
        "final_step": int(b["step"]),
        "exact": exact,
        "exact_resumes": kills if exact and not failures else 0,
        "events": events,
        "steps": args.steps,
        "seconds": round(time.time() - t0, 1),
        "machine": machine(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "command": f"python benchmarks/kill_resume.py --kills {args.kills} --steps {args.steps} --seed {args.seed}",
    }
    write_json(args.out, result)
    print(f"{result['exact_resumes']} of {kills} kills resumed exactly ({result['during_checkpoint_write']} during a checkpoint write); "
          f"final step {result['final_step']}, bit-identical to the unbroken run: {exact}; wrote {args.out}")


if __name__ == "__main__":
    main()

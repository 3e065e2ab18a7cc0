"""Kill real training runs with SIGKILL at random points, resume them, and check every folder after each kill.

    python tests/kill_resume_driver.py WORKDIR --chains 4 --kills 6 --seed 0   # prints a JSON report

Runs `training/train.py`'s `main` in forked child processes (the imports are paid once: a fresh interpreter per
attempt would cost seconds each) and sends each child SIGKILL, the same signal an out-of-memory killer or a
preempted job sends: nothing in the child runs after it. Half the kills come after a random delay; the other
half right before or after a random one of the child's file-system writes (os.replace / rename / unlink /
fsync / mkdir, safetensors writes), so the kills land inside checkpoint and model-folder writes too.

After every kill the driver checks, against one uninterrupted reference run:
- every OUTPUT_DIR/checkpoints/step_N folder is complete (`check_checkpoint`) and its files are the
  reference's step_N files, byte for byte;
- when OUTPUT_DIR/config.json exists, the folder loads and holds the reference's final weights;
- train_log.jsonl holds the reference's records in order (a last line cut by the kill aside).
Then it resumes (`--resume latest`, or `--overwrite-output-dir` when no checkpoint is complete yet). The
finished run must end with the reference's weights and log, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from safetensors.torch import load_file  # noqa: E402

import training.train as train  # noqa: E402
from otseg_hf.runs.checkpoints import CheckpointError, check_checkpoint  # noqa: E402

RUN = [
    "--recipe", "otseg-synthetic-inductive", "--num-train-images", "8", "--num-eval-images", "2",
    "--per-device-batch-size", "2", "--total-batch-size", "2", "--warmup-steps", "2", "--logging-steps", "1",
    "--max-steps", "8", "--checkpointing-steps", "2", "--cpu",
]  # fmt: skip
WRITES = ("replace", "rename", "unlink", "fsync", "mkdir")


def child(argv: list[str], log: Path, kill_at: int | None, kill_after: bool) -> None:
    """In the forked child: run train.main; with `kill_at`, SIGKILL itself at that file-system call."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    calls = [0]

    def wrap(function):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at and not kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            result = function(*args, **kwargs)
            if calls[0] == kill_at and kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapped

    import otseg_hf.runs.checkpoints as checkpoints

    for name in WRITES:
        setattr(os, name, wrap(getattr(os, name)))
    checkpoints.save_file = wrap(checkpoints.save_file)
    code = 0
    try:
        train.main(argv)
    except BaseException as error:  # noqa: BLE001  (reported through the exit code and the log)
        print(f"child failed: {type(error).__name__}: {error}", flush=True)
        code = 3
    if kill_at is None:
        print(f"WRITE_CALLS {calls[0]}", flush=True)
    sys.stdout.flush()
    os._exit(code)


def attempt(argv, log: Path, delay: float | None = None, kill_at=None, kill_after=False) -> str:
    """'finished', 'killed' or 'failed'."""
    pid = os.fork()
    if pid == 0:
        child(argv, log, kill_at, kill_after)
    if delay is not None:
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "killed"
    else:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    return "finished" if os.WEXITSTATUS(status) == 0 else "failed"


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names if n != "checkpoint.json"
    )


def inspect(out: Path, reference: Path, reference_weights: dict, reference_log: list[str]) -> list[str]:
    """Problems in `out` after a kill (empty list: every folder that loads is right)."""
    from transformers import AutoModelForSemanticSegmentation

    problems = []
    for folder in sorted((out / "checkpoints").glob("step_*")) if (out / "checkpoints").is_dir() else []:
        try:
            check_checkpoint(folder)
        except CheckpointError as error:
            problems.append(f"incomplete checkpoint under its final name: {error}")
            continue
        if not same_files(folder, reference / "checkpoints" / folder.name):
            problems.append(f"{folder.name} differs from the reference's")
    if (out / "config.json").exists():
        try:
            model = AutoModelForSemanticSegmentation.from_pretrained(out)
        except Exception as error:  # noqa: BLE001
            problems.append(f"config.json present but the folder does not load: {error}")
        else:
            state = model.state_dict()
            if any(not torch.equal(state[k], v) for k, v in reference_weights.items()):
                problems.append("the folder loads with other weights than the run's")
    if (out / "train_log.jsonl").exists():
        lines = (out / "train_log.jsonl").read_text().split("\n")
        complete, last = lines[:-1], lines[-1]
        if complete != reference_log[: len(complete)]:
            problems.append("train_log.jsonl differs from the reference's records")
        if last and not reference_log[len(complete)].startswith(last):
            problems.append("train_log.jsonl ends in a line that is not the start of the next record")
    return problems


def state_of(out: Path) -> str:
    """Where the kill left the folder, for the report."""
    checkpoints = out / "checkpoints"
    parts = []
    if checkpoints.is_dir():
        done = sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))
        staged = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("."))
        parts.append(f"checkpoints {done}" + (f" staging {staged}" if staged else ""))
    if (out / ".model.partial").exists():
        parts.append("model staging")
    if (out / "config.json").exists():
        parts.append("model folder")
    return "; ".join(parts) or "empty"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--kills", type=int, default=6, help="kills per chain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    reference = args.workdir / "reference"
    log = args.workdir / "children.log"
    started = time.monotonic()
    if attempt([*RUN, "--output-dir", str(reference)], log) != "finished":
        raise SystemExit(f"the reference run failed; see {log}")
    duration = time.monotonic() - started
    write_calls = int(log.read_text().rsplit("WRITE_CALLS ", 1)[1].split()[0])
    reference_weights = load_file(reference / "model.safetensors")
    reference_log = (reference / "train_log.jsonl").read_text().split("\n")[:-1]
    report = {"reference_seconds": round(duration, 2), "write_calls": write_calls, "kills": [], "problems": []}
    for chain in range(args.chains):
        out = args.workdir / f"chain{chain}"
        kills = 0
        while kills < args.kills:
            argv = [*RUN, "--output-dir", str(out)]
            try:
                check_checkpoint_exists = any(
                    _complete(p) for p in (out / "checkpoints").glob("step_*")
                )
            except OSError:
                check_checkpoint_exists = False
            if check_checkpoint_exists:
                argv.append("--resume=latest")
            elif out.exists() and any(out.iterdir()):
                argv.append("--overwrite-output-dir")
            if rng.random() < 0.5:
                how = {"delay": rng.uniform(0.0, duration)}
                description = f"after {how['delay']:.2f} s"
            else:
                how = {"kill_at": rng.randint(1, write_calls), "kill_after": rng.random() < 0.5}
                description = f"{'after' if how['kill_after'] else 'before'} write call {how['kill_at']}"
            outcome = attempt(argv, log, **how)
            if outcome == "failed":
                report["problems"].append(f"chain {chain}: a run failed ({description}); see {log}")
                break
            if outcome == "finished":
                continue  # the delay was longer than this attempt; draw another kill
            kills += 1
            problems = inspect(out, reference, reference_weights, reference_log)
            report["kills"].append({"chain": chain, "when": description, "left": state_of(out)})
            report["problems"].extend(f"chain {chain}, kill {description}: {p}" for p in problems)
        argv = [*RUN, "--output-dir", str(out)]
        if (out / "checkpoints").is_dir() and any(_complete(p) for p in (out / "checkpoints").glob("step_*")):
            argv.append("--resume=latest")
        elif out.exists() and any(out.iterdir()):
            argv.append("--overwrite-output-dir")
        if attempt(argv, log) != "finished":
            report["problems"].append(f"chain {chain}: the last resume failed; see {log}")
            continue
        final = load_file(out / "model.safetensors")
        if final.keys() != reference_weights.keys() or any(
            not torch.equal(final[k], reference_weights[k]) for k in final
        ):
            report["problems"].append(f"chain {chain}: the resumed run's weights differ from the reference's")
        if (out / "train_log.jsonl").read_text().split("\n")[:-1] != reference_log:
            report["problems"].append(f"chain {chain}: the resumed run's log differs from the reference's")
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report))


def _complete(path: Path) -> bool:
    try:
        check_checkpoint(path)
    except CheckpointError:
        return False
    return True


if __name__ == "__main__":
    main()

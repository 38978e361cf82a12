#!/usr/bin/env python
"""Time a .tflite on a real phone with LiteRT's benchmark_model, one big core, op profiling on.

    python scripts/pixel_benchmark.py model.tflite                    # a .tflite you have
    python scripts/pixel_benchmark.py --zoo v1_standard --variant int8 # convert a zoo model first
    python scripts/pixel_benchmark.py --parse output.txt --name mine  # parse a saved tool output

What it does, with ``adb`` (Debian's ``adb`` package, or the Android SDK's platform-tools):

1. checks that ``adb`` exists and exactly one device is attached (else a clear message and a
   non-zero exit: 2 no adb, 3 no device or several, 4 no benchmark binary on the device);
2. pushes the model to ``/data/local/tmp``;
3. runs ``taskset <mask> <binary> --graph=... --num_threads=1 --num_runs=N --warmup_runs=W`` with
   op profiling on (``--enable_op_profiling=true``; the LiteRT CompiledModel binary takes
   ``--use_profiler=true``: ``--flavor litert``), pinned to the big cores by the ``taskset``
   mask (``f0`` is the Pixel 2's four big cores, as in the tool's README; check
   ``/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq`` on your phone);
4. saves the raw output to ``data/sweeps/logs/pixel_<name>.txt``, parses it with
   ``qlib.deploy.parse_benchmark_model`` and writes ``data/sweeps/pixel_<name>.json`` with the
   same record fields as the host profile (``benchmarks/op_profile.py``), ``source="pixel"``.

The benchmark binary cannot be downloaded from here; get it yourself and push it once:

- LiteRT's prebuilt nightly (CompiledModel API, profiler flag ``--use_profiler=true``):
  https://storage.googleapis.com/litert/binaries/latest/android_arm64/benchmark_model
  (listed on https://ai.google.dev/edge/litert/next/benchmark);
- or the Interpreter-API tool (``--enable_op_profiling=true``), prebuilt nightly from
  https://ai.google.dev/edge/litert/models/measurement, or built from source:
  ``bazel build -c opt --config=android_arm64 tensorflow/lite/tools/benchmark:benchmark_model``.

Then ``adb push benchmark_model /data/local/tmp && adb shell chmod +x /data/local/tmp/benchmark_model``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEVICE_DIR = "/data/local/tmp"
WHERE_TO_GET = (
    "Get LiteRT's benchmark_model for Android arm64 (it cannot be downloaded from here):\n"
    "  - prebuilt nightly (CompiledModel API, use --flavor litert): "
    "https://storage.googleapis.com/litert/binaries/latest/android_arm64/benchmark_model\n"
    "  - or the Interpreter-API tool: https://ai.google.dev/edge/litert/models/measurement, or build it:\n"
    "    bazel build -c opt --config=android_arm64 tensorflow/lite/tools/benchmark:benchmark_model\n"
    f"then: adb push benchmark_model {DEVICE_DIR} && adb shell chmod +x {DEVICE_DIR}/benchmark_model")


class DeviceError(RuntimeError):
    """No adb, no device, or no benchmark binary: ``code`` is the exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def find_adb() -> str:
    adb = shutil.which("adb")
    if adb is None:
        raise DeviceError("adb not found on PATH. Install Debian's adb package (sudo apt-get install adb) or the "
                          "Android SDK platform-tools, connect the phone with USB debugging on, and run again.", 2)
    return adb


def adb_run(adb: str, serial: str | None, *args: str, check: bool = True, timeout: float = 600) -> str:
    cmd = [adb] + (["-s", serial] if serial else []) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise DeviceError(f"`{' '.join(cmd)}` failed ({res.returncode}): {(res.stderr or res.stdout).strip()}", 5)
    return res.stdout + res.stderr


def device(adb: str, serial: str | None) -> str:
    """The serial of the one attached device (or ``serial``, checked)."""
    out = adb_run(adb, None, "devices")
    ready = [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("\tdevice") or ln.split()[-1:] == ["device"]]
    others = [ln.strip() for ln in out.splitlines()[1:] if ln.strip() and ln.split()[0] not in ready]
    if serial:
        if serial not in ready:
            raise DeviceError(f"device {serial!r} is not attached and ready (adb devices: {ready or 'none'}).", 3)
        return serial
    if not ready:
        hint = f" Seen but not ready: {others} (unauthorized: accept the USB debugging prompt on the phone)." if others else ""
        raise DeviceError("no device attached: `adb devices` lists none. Connect the phone by USB, turn on USB "
                          "debugging (Settings > Developer options) and accept the prompt, then run again." + hint, 3)
    if len(ready) > 1:
        raise DeviceError(f"{len(ready)} devices attached ({ready}); pick one with --serial.", 3)
    return ready[0]


def run_on_device(adb, serial, model_path: Path, binary: str, mask: str, runs: int, warmup: int, flavor: str) -> str:
    if "No such file" in adb_run(adb, serial, "shell", "ls", binary, check=False):
        raise DeviceError(f"no benchmark binary at {binary} on the device.\n{WHERE_TO_GET}", 4)
    remote = f"{DEVICE_DIR}/{model_path.name}"
    adb_run(adb, serial, "push", str(model_path), remote)
    profiling = "--use_profiler=true" if flavor == "litert" else "--enable_op_profiling=true"
    cmd = ["shell", "taskset", mask, binary, f"--graph={remote}", "--num_threads=1", f"--num_runs={runs}",
           f"--warmup_runs={warmup}", profiling]
    if flavor == "litert":
        cmd.append("--use_cpu=true")
    print("running: adb", " ".join(cmd), flush=True)
    return adb_run(adb, serial, *cmd)


def records_from(text: str, name: str, model_bytes: bytes | None, device_name: str) -> tuple[list, dict]:
    """Parse the tool's text into op/summary records like benchmarks/op_profile.py's."""
    from qlib.deploy import parse_benchmark_model

    out = parse_benchmark_model(text)
    macs = [None] * len(out.ops)
    if model_bytes is not None:  # the ops of the file, matched by order when the profile lists the same ops
        from qlib.deploy import op_models

        ops = op_models(model_bytes)
        if [o.op_type for o in ops] == [r["node_type"] for r in out.ops]:
            macs = [o.macs for o in ops]
    common = dict(model=name, variant="device", kernels="device", source="pixel", device=device_name)
    records = [dict(kind="op", **common, index=i, op_type=r["node_type"], name=r["name"], macs=m, ms=r["avg_ms"],
                    share=r["share"], ms_per_mmac=(r["avg_ms"] / (m / 1e6)) if m else None,
                    reported_percent=r["reported_percent"])
               for i, (r, m) in enumerate(zip(out.ops, macs))]
    summary = dict(kind="summary", **common, ops=len(out.ops), whole_ms=out.avg_us / 1000, total_ms=out.ops_ms,
                   ratio=out.ops_ms / (out.avg_us / 1000), timings_us=out.timings,
                   by_type=[dict(t) for t in out.by_type])
    return records + [summary], {"whole_ms": out.avg_us / 1000, "ops": len(out.ops)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path, help="a .tflite file")
    ap.add_argument("--zoo", help="convert this zoo model instead (v1_standard, ...)")
    ap.add_argument("--variant", default="int8", choices=["int8", "float32"], help="with --zoo")
    ap.add_argument("--parse", type=Path, help="parse a saved benchmark_model output instead of running one")
    ap.add_argument("--name", help="name of the results (default: the model file's stem)")
    ap.add_argument("--binary", default=f"{DEVICE_DIR}/benchmark_model")
    ap.add_argument("--flavor", default="interpreter", choices=["interpreter", "litert"])
    ap.add_argument("--cpu-mask", default="f0", help="taskset mask of the big cores (Pixel 2: f0)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--serial")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "data" / "sweeps")
    args = ap.parse_args(argv)
    try:
        model_bytes, device_name = None, "unknown"
        if args.parse:
            text = args.parse.read_text()
            name = args.name or args.parse.stem
            if args.model:
                model_bytes = args.model.read_bytes()
        else:
            adb = find_adb()
            serial = device(adb, args.serial)
            if args.zoo:
                from qlib.data import fashion_mnist_splits, one_per_class
                from qlib.deploy import converter_int8, float_tflite
                from qlib.zoo import load_model

                m = load_model(args.zoo)
                if args.variant == "int8":
                    s = fashion_mnist_splits()
                    model_bytes = converter_int8(m, one_per_class(s["x_val"], s["y_val"])[0])
                else:
                    model_bytes = float_tflite(m)
                path = Path("/tmp") / f"{args.zoo}_{args.variant}.tflite"
                path.write_bytes(model_bytes)
            elif args.model:
                path, model_bytes = args.model, args.model.read_bytes()
            else:
                ap.error("give a .tflite, --zoo NAME, or --parse OUTPUT")
            name = args.name or path.stem
            device_name = adb_run(adb, serial, "shell", "getprop", "ro.product.model").strip() or serial
            text = run_on_device(adb, serial, path, args.binary, args.cpu_mask, args.runs, args.warmup, args.flavor)
            log = args.out_dir / "logs" / f"pixel_{name}.txt"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text)
            print(f"raw output saved to {log}")
        records, summary = records_from(text, name, model_bytes, device_name)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    meta = {"command": " ".join(["python", "scripts/pixel_benchmark.py"] + (argv if argv is not None else sys.argv[1:])),
            "what": "PHONE: LiteRT benchmark_model, 1 thread" + (f", taskset {args.cpu_mask}" if not args.parse else ""),
            "device": device_name}
    out = args.out_dir / f"pixel_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=float) + "\n")
    print(f"{name}: whole model {summary['whole_ms']:.3f} ms, {summary['ops']} ops; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

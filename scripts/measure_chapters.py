"""What a student's machine needs to run each chapter: time, CPU time and peak memory of its kernel.

Each chapter of ``_toc.yml`` (the full notebook, solutions included) runs in a fresh Jupyter kernel,
one at a time, through nbclient, as a student would run it top to bottom. Per chapter:

* ``kernel_start_s``: starting the kernel until it answers;
* ``run_s``: executing every cell (wall clock);
* ``cpu_s``: the kernel process's user + system CPU time (``/proc/<pid>/stat``), all threads;
* ``peak_rss_mib``: the kernel's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``).

The result goes to ``data/sweeps/chapter_resources.json`` (listed in ``data/MANIFEST.md``), with the machine
it ran on. Linux only (reads ``/proc``). Usage::

    python scripts/measure_chapters.py [--out data/sweeps/chapter_resources.json] [--chapters dfq ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import notebooks  # noqa: E402  (scripts/notebooks.py)


def _proc(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, user + system CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm_kib = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)
    return hwm_kib / 1024, cpu


def measure(md: Path) -> dict:
    nb = notebooks.read(md)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(md.parent)}})
    t0 = time.perf_counter()
    client.km = client.create_kernel_manager()
    client.start_new_kernel()
    client.start_new_kernel_client()
    started = time.perf_counter()
    try:
        pid = client.km.provisioner.process.pid
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        done = time.perf_counter()
        peak, cpu = _proc(pid)
    finally:
        client.km.shutdown_kernel(now=True)
        client.kc.stop_channels()
    return {"chapter": md.stem, "code_cells": sum(c.cell_type == "code" for c in nb.cells),
            "kernel_start_s": round(started - t0, 1), "run_s": round(done - started, 1),
            "cpu_s": round(cpu, 1), "peak_rss_mib": round(peak)}


def machine() -> dict:
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor())
    mem_kib = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                   if l.startswith("MemTotal:"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "tensorflow": version("tensorflow"),
            "os": platform.platform()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "chapter_resources.json")
    parser.add_argument("--chapters", nargs="*", help="chapter names (default: every chapter of _toc.yml)")
    args = parser.parse_args(argv)
    chapters = [md for md in notebooks.chapters() if not args.chapters or md.stem in args.chapters]
    t0 = time.perf_counter()
    rows = []
    for md in chapters:
        rows.append(measure(md))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "meta": {"command": "python scripts/measure_chapters.py" + (
                     " --chapters " + " ".join(args.chapters) if args.chapters else ""),
                 "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                 "machine": machine(), "total_s": round(time.perf_counter() - t0, 1),
                 "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
                 "note": "one chapter at a time, each in a fresh kernel, full notebook (solutions included)"},
        "records": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

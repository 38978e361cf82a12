#!/usr/bin/env python
"""Merge partial sweep outputs (run in parallel, or one part recomputed) into one file.

    python scripts/merge_sweeps.py data/sweeps/bits.json part1.json part2.json ...
    python scripts/merge_sweeps.py data/sweeps/dfq.json data/sweeps/dfq.json:fashion /tmp/dfq_imagenet.json

Records are concatenated; each part's meta (command, backend, seconds) is kept under "parts"
(a part that is itself a merge contributes its own parts). ``FILE:fashion`` keeps only the
Fashion-MNIST records of FILE, ``FILE:imagenet`` only the ImageNet MobileNetV2 ones; the metas
of runs that made none of the kept records (``--skip-fashion`` / ``--skip-imagenet``) are
dropped, and the others are marked with what was kept (their ``imagenet*`` or ``fashion*`` entries
about the records left out are removed). The output may be one of the inputs:
every input is read before anything is written.
"""

import json
import sys
from pathlib import Path

IMAGENET = "imagenet_mobilenet_v2"
KINDS = {"fashion": lambda r: r["model"] != IMAGENET, "imagenet": lambda r: r["model"] == IMAGENET}
SKIPS = {"fashion": "--skip-fashion", "imagenet": "--skip-imagenet"}


def read_part(spec: str) -> tuple[list, list]:
    """Records and metas of one part ``FILE`` or ``FILE:fashion`` / ``FILE:imagenet``."""
    path, _, kind = spec.partition(":")
    if kind and kind not in KINDS:
        raise SystemExit(f"unknown part filter {kind!r} in {spec!r}: use FILE, FILE:fashion or FILE:imagenet")
    data = json.loads(Path(path).read_text())
    metas = data["meta"].get("parts", [data["meta"]])
    records = data["records"]
    if kind:
        records = [r for r in records if KINDS[kind](r)]
        other = "imagenet" if kind == "fashion" else "fashion"
        metas = [dict({k: v for k, v in m.items() if not k.startswith(other)}, kept_records=kind)
                 for m in metas if SKIPS[kind] not in m.get("command", "")]
    return records, metas


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    out = Path(argv[1])
    records, metas = [], []
    for spec in argv[2:]:
        r, m = read_part(spec)
        records += r
        metas += m
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": {"parts": metas}, "records": records}, indent=1) + "\n")
    print(f"wrote {out}: {len(records)} records from {len(argv) - 2} parts")


if __name__ == "__main__":
    main(sys.argv)

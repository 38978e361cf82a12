#!/usr/bin/env python
"""Low-rank pointwise convolutions on the zoo's MobileNet v1: accuracy, MACs and int8 latency against rank.

    python scripts/lowrank_sweep.py                 # train + deploy, writes data/sweeps/lowrank.json
    KERAS_BACKEND=jax python scripts/lowrank_sweep.py --phase train     # on a GPU: the fine-tunes only
    python scripts/lowrank_sweep.py --phase deploy  # then here (TensorFlow): TFLite int8 and latency

For each energy fraction ``e``, every 1x1 conv of ``v1_standard`` (BatchNorm folded) is split
into two thinner ones at the smallest rank keeping ``e`` of its singular-value energy, when that
rank saves multiply-adds (``r (I + O) < I O``); other layers stay. Each factorized network is
evaluated as is, then fine-tuned for ``--epochs`` epochs (the zoo's recipe at a tenth of its
learning rate, no warm-up) and evaluated again; a control fine-tunes the unfactorized (folded)
network the same way. One fine-tune of 2 epochs over the 55,000 training images takes 6-7
minutes on 2 CPU cores (about 3 minutes and 180-200 CPU-seconds per epoch, measured with other
jobs on the machine; every record carries its ``finetune_seconds`` and ``finetune_cpu_seconds``).

Phase ``train`` (any Keras backend) writes each configuration's fine-tuned weights and float
results to ``--work`` (one file each, so configurations can train in parallel processes:
``--energies 0.5 --no-control``); phase ``deploy`` (TensorFlow) converts the original and every fine-tuned network to
full-integer TFLite, measures their int8 test accuracy and their latency on this host's CPU
(one thread, batch 1, warm-up, median of interleaved repeats, all models in one run), and
writes ``data/sweeps/lowrank.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from partiv_common import LABEL_SMOOTHING, accuracy, provenance, train, write_results  # noqa: E402

import keras  # noqa: E402

from qlib import lowrank  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.folding import fold_batchnorm  # noqa: E402
from qlib.models import layer_costs  # noqa: E402
from qlib.zoo import load_model  # noqa: E402


def plan(folded, fraction):
    """``{layer: rank}``: the energy rank of every 1x1 conv where it saves multiply-adds."""
    ranks = {}
    for name in lowrank.pointwise_layers(folded):
        w = folded.get_layer(name).get_weights()[0]
        r = lowrank.rank_for_energy(w, fraction)
        if r <= lowrank.saving_rank(*w.shape[2:]):
            ranks[name] = r
    return ranks


def tag(fraction):
    return "original" if fraction is None else f"e{fraction:g}"


def build(model, folded, fraction):
    if fraction is None:
        return fold_batchnorm(model), {}
    ranks = plan(folded, fraction)
    return lowrank.factorize_model(model, ranks), ranks


def phase_train(args, model, folded, splits, test):
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=LABEL_SMOOTHING)
    for fraction in ([None] if args.control else []) + args.energies:
        start = time.time()
        net, ranks = build(model, folded, fraction)
        macs = sum(c["macs"] for c in layer_costs(net))
        rec = {"config": tag(fraction), "energy": fraction, "ranks": ranks, "factorized_layers": len(ranks),
               "macs": int(macs), "params": int(net.count_params()), "epochs": args.epochs, "lr": args.lr,
               "seed": args.seed, "before_finetune": accuracy(net, *test)}
        timing = train(net, loss, splits, args.epochs, args.lr, seed=args.seed, warmup=False)
        seconds = timing["seconds"]
        rec["finetune_seconds"] = round(seconds, 1)
        rec["finetune_cpu_seconds"] = round(timing["cpu_seconds"], 1)
        rec.update(accuracy(net, *test))
        rec["limit"] = args.limit
        net.save_weights(args.work / f"{tag(fraction)}.weights.h5")
        meta = provenance(sys.argv[1:], time.time() - start)
        (args.work / f"train-{tag(fraction)}.json").write_text(json.dumps({"meta": meta, "record": rec}, indent=1) + "\n")
        print(f"{tag(fraction)}: {len(ranks)} layers factorized, {macs / 1e6:.2f}M MACs, "
              f"{rec['before_finetune']['accuracy']:.4f} -> {rec['accuracy']:.4f} after {args.epochs} epoch(s) "
              f"({seconds:.0f} s)", flush=True)


def trained_runs(work: Path):
    """Every fine-tuned configuration in ``work`` (written by --phase train, possibly by parallel processes)."""
    parts = sorted(work.glob("train-*.json"))
    if not parts:
        raise SystemExit(f"no fine-tuned configurations in {work}; run --phase train first")
    out = []
    for part in parts:
        saved = json.loads(part.read_text())
        rec = dict(saved["record"])
        rec.update({k: saved["meta"][k] for k in ("command", "keras_backend", "keras_version", "machine")})
        out.append(rec)
    return sorted(out, key=lambda r: -1.0 if r["energy"] is None else r["energy"])


def tflite_float(model) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    return conv.convert()


def latencies(models: dict, rounds: int = 30, per_round: int = 20) -> dict:
    """Median ms per image of each TFLite model (:func:`qlib.deploy.time_models`): LiteRT's default
    kernels, one thread, batch 1, rounds interleaved across the models in a rotating order; the
    calling thread's CPU time, which on a shared machine leaves out the waits for the core."""
    from qlib.deploy import time_models

    timings = time_models(models, kernels="default", num_threads=1, rounds=rounds, per_round=per_round, warmup=20)
    return {name: t.cpu_median_ms for name, t in timings.items()}


def phase_deploy(args, model, folded, splits, test, trained):
    from qlib.tflite import convert_int8

    calib, _ = one_per_class(splits["x_val"], splits["y_val"])
    int8, floats, nets = {}, {}, {}
    for rec in trained:
        fraction = rec["energy"]
        net, ranks = build(model, folded, fraction)
        if ranks != {k: int(v) for k, v in rec["ranks"].items()}:
            raise ValueError(f"{rec['config']}: the ranks planned now differ from the trained ones; retrain")
        net.load_weights(args.work / f"{tag(fraction)}.weights.h5")
        nets[rec["config"]] = net
        int8[rec["config"]] = convert_int8(net, calib)
        floats[rec["config"]] = tflite_float(net)
    # the original zoo model, not fine-tuned: the reference of every ratio
    int8["zoo"] = convert_int8(model, calib)
    floats["zoo"] = tflite_float(model)
    lat8 = latencies(int8)
    latf = latencies(floats)
    records = []
    for rec in trained:
        c = rec["config"]
        rec = dict(rec)
        rec["int8"] = accuracy(int8[c], *test)
        rec["int8_ms"], rec["float_ms"] = lat8[c], latf[c]
        rec["int8_ms_ratio"] = lat8[c] / lat8["zoo"]
        rec["float_ms_ratio"] = latf[c] / latf["zoo"]
        rec["int8_bytes"] = len(int8[c])
        records.append(rec)
        print(f"{c}: int8 {rec['int8']['accuracy']:.4f}, int8 {lat8[c]:.3f} ms ({rec['int8_ms_ratio']:.2f}x of the "
              f"original), float {latf[c]:.3f} ms ({rec['float_ms_ratio']:.2f}x)", flush=True)
    zoo = {"config": "zoo", "energy": None, "ranks": {}, "factorized_layers": 0,
           "macs": int(sum(c["macs"] for c in layer_costs(model))), "params": int(fold_batchnorm(model).count_params()),
           "int8": accuracy(int8["zoo"], *test), "int8_ms": lat8["zoo"], "float_ms": latf["zoo"],
           "int8_ms_ratio": 1.0, "float_ms_ratio": 1.0, "int8_bytes": len(int8["zoo"])}
    zoo.update(accuracy(model, *test))
    return [zoo] + records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="v1_standard")
    ap.add_argument("--energies", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phase", choices=["all", "train", "deploy"], default="all")
    ap.add_argument("--no-control", dest="control", action="store_false",
                    help="skip the control (the unfactorized network fine-tuned the same way)")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (a smoke test)")
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "work" / "lowrank",
                    help="fine-tuned weights (not shipped: regenerate them with --phase train)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "lowrank.json")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    args.work.mkdir(parents=True, exist_ok=True)
    splits = fashion_mnist_splits()
    if args.limit:
        splits["x_train"], splits["y_train"] = splits["x_train"][:args.limit], splits["y_train"][:args.limit]
    test = (splits["x_test"], splits["y_test"])
    model = load_model(args.model)
    folded = fold_batchnorm(model)
    if args.phase in ("all", "train"):
        phase_train(args, model, folded, splits, test)
    if args.phase == "train":
        print(f"fine-tuned weights in {args.work}; when every configuration is done, here (TensorFlow): "
              f"python scripts/lowrank_sweep.py --phase deploy --work {args.work}")
        return
    trained = trained_runs(args.work)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("the deploy phase converts to TFLite and needs KERAS_BACKEND=tensorflow")
    deploy_start = time.time()
    records = phase_deploy(args, model, folded, splits, test, trained)
    epochs = {r["epochs"] for r in trained}
    machines = sorted({f"{r['machine']} (Keras {r['keras_version']} on {r['keras_backend']})" for r in trained})
    meta = {"deploy": provenance(argv, time.time() - deploy_start), "model": args.model,
            "epochs": epochs.pop() if len(epochs) == 1 else sorted(epochs), "train_machines": machines,
            "note": "each record carries the command, backend, machine and seconds of its fine-tune",
            "latency": "qlib.deploy.time_models: LiteRT's default kernels on this host's CPU, 1 thread, batch 1, "
                       "20 warm-up calls, median thread CPU time of 30 interleaved rounds of 20 calls; not a phone"}
    write_results(args.out, meta, records)


if __name__ == "__main__":
    main()

"""nnU-Net with its own default 3d_fullres plan on a lent GPU (issue 20): validation Dice against
training wall time, and the held-out test patients scored like every other method.

The data are those of the CPU curve (:mod:`cervicontour.baselines.nnunet_curve`): the five structures
as nnU-Net regions; train seed 2002 N=20, validation seed 4004 N=3, test seed 3003 N=10 (phantom 1,
size small, five masks only). nnU-Net's planner and preprocessing, its trainer (loss, optimiser,
augmentation, sampling, AMP on CUDA) and its sliding-window predictor; what differs from a stock
``nnUNetv2_train`` is listed in the run record (``changes_from_defaults``).

Three steps, because the GPU machine has no SimpleITK (and its wheel, 53 MB, does not fit the 64 MB
that travels to it):

1. ``pack`` (here, CPU): cohorts, export, nnU-Net's default plan; then the CT and label arrays exactly
   as nnU-Net's own reader (its ``SimpleITKIO``) gives them, int16/uint8 (checked lossless),
   lzma-compressed, with their properties, and the SHA-256 of one case preprocessed here.
       python benchmarks/nnunet_gpu.py pack
2. ``train`` (the GPU machine; torch, numpy and the carried wheels; SimpleITK is not imported for
   real: a stand-in that raises on use satisfies nnU-Net's module-level import, and nothing on this
   path reads a file through it). It preprocesses the training arrays with nnU-Net's
   ``DefaultPreprocessor.run_case_npy`` and checks the one case against the hash made here, trains,
   and at every ``--every-s`` of training wall time predicts the validation patients
   (``nnUNetPredictor.predict_single_npy_array``: nnU-Net's preprocessing, sliding window, tile step
   0.5, Gaussian weighting, no mirroring; each region's sigmoid > 0.5, as the import does); after
   ``--budget-s`` it predicts validation and test patients. OUT/run.json and OUT/masks.npz are
   rewritten after each point, so a run stopped at its time limit still returns what it measured.
       python benchmarks/nnunet_gpu.py train --pack gpu_pack --out "$OUT"
3. ``score`` (here): the returned masks on the patients' own grids, Dice per point (validation) and
   the full metric family on the test patients (``evaluate_cohort``), written to
   ``benchmarks/results/nnunet_gpu_curve.json`` and the test predictions to ``out/nnunet_gpu/test_pred``.
       python benchmarks/nnunet_gpu.py score --run DIR_WITH_run.json_AND_masks.npz
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import lzma
import os
import pickle
import shutil
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "nnunet_gpu" / "work"
PACK = ROOT / "gpu_pack"
RESULT = ROOT / "benchmarks" / "results" / "nnunet_gpu_curve.json"
CHECK_CASE = "SYN001"


def config():
    from cervicontour.baselines.nnunet_curve import CurveConfig

    return CurveConfig(plan="default", device="cuda", dataset_id=702, iterations_per_epoch=250,
                       eval_every_cpu_s=90.0, stop_cpu_s=360.0)  # fmt: skip


def _save_xz(path: Path, arrays: dict) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(lzma.compress(buffer.getvalue(), preset=6))


def _load_xz(path: Path) -> dict:
    import numpy as np

    with np.load(io.BytesIO(lzma.decompress(path.read_bytes()))) as data:
        return {k: data[k] for k in data.files}


def _sha(array) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() + f"/{array.dtype}/{'x'.join(map(str, array.shape))}"


def _lossless(array, dtype):
    import numpy as np

    cast = array.astype(dtype)
    if not np.array_equal(cast, array):
        raise SystemExit(f"arrays are not exactly {np.dtype(dtype).name}: packing them so would change nnU-Net's input")
    return cast


# --------------------------------------------------------------------------- 1. pack (here)
def pack(args) -> None:
    import numpy as np
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from cervicontour.baselines.nnunet_curve import prepare

    cfg = config()
    prepared = prepare(cfg, args.work)
    dataset = prepared["dataset"]
    raw, pre = args.work / "nnUNet_raw" / dataset, args.work / "nnUNet_preprocessed" / dataset
    shutil.rmtree(args.pack, ignore_errors=True)
    (args.pack / "nnUNet_preprocessed" / dataset).mkdir(parents=True)
    for name in ("dataset.json", "nnUNetPlans.json", "dataset_fingerprint.json"):
        shutil.copy2(pre / name, args.pack / "nnUNet_preprocessed" / dataset / name)
    io_ = SimpleITKIO()
    arrays, properties = {}, {}
    train = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    for case in train:
        data, props = io_.read_images([str(raw / "imagesTr" / f"{case}_0000.nii.gz")])
        seg, _ = io_.read_seg(str(raw / "labelsTr" / f"{case}.nii.gz"))
        arrays[f"train/{case}/data"], arrays[f"train/{case}/seg"] = _lossless(data, np.int16), _lossless(seg, np.uint8)
        properties[f"train/{case}"] = props
    held_out = [c for group in prepared["cases"].values() for c in group]
    for case in held_out:
        data, props = io_.read_images([str(raw / "imagesTs" / f"{case}_0000.nii.gz")])
        arrays[f"held_out/{case}/data"] = _lossless(data, np.int16)
        properties[f"held_out/{case}"] = {"spacing": props["spacing"]}
    _save_xz(args.pack / "arrays.npz.xz", arrays)
    (args.pack / "properties.pkl").write_bytes(pickle.dumps(properties))
    reference, reference_seg, _previous, _props = nnUNetDatasetBlosc2(str(pre / "nnUNetPlans_3d_fullres"), [CHECK_CASE]).load_case(CHECK_CASE)
    meta = {"config": cfg.to_json(), "config_sha256": cfg.digest(), "prepared": prepared, "train": train,
            "check": {"case": CHECK_CASE, "data_sha256": _sha(reference[:]), "seg_sha256": _sha(reference_seg[:])}}  # fmt: skip
    (args.pack / "meta.json").write_text(json.dumps(meta, indent=1))
    size = sum(p.stat().st_size for p in args.pack.rglob("*") if p.is_file())
    print(f"packed {len(train)} training and {len(held_out)} held-out cases into {args.pack} ({size / 1e6:.1f} MB)")


# --------------------------------------------------------------------------- 2. train (GPU machine)
def _simpleitk_stand_in() -> None:
    """nnU-Net imports SimpleITK at module level (its image readers); nothing here reads through it."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        module = types.ModuleType("SimpleITK")

        def missing(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            raise ImportError(f"SimpleITK is not installed on this machine (SimpleITK.{name} was used)")

        module.__getattr__ = missing
        sys.modules["SimpleITK"] = module


def _preprocess(args, meta: dict, target: Path) -> tuple[dict, dict]:
    """nnU-Net's run_case_save with the arrays carried instead of files read here (same steps after reading)."""
    import numpy as np
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset = meta["prepared"]["dataset"]
    source = args.pack / "nnUNet_preprocessed" / dataset
    plans = PlansManager(str(source / "nnUNetPlans.json"))
    configuration = plans.get_configuration("3d_fullres")
    dataset_json = json.loads((source / "dataset.json").read_text())
    arrays, properties = _load_xz(args.pack / "arrays.npz.xz"), pickle.loads((args.pack / "properties.pkl").read_bytes())
    out = target / dataset / "nnUNetPlans_3d_fullres"
    out.mkdir(parents=True, exist_ok=True)
    preprocessor = DefaultPreprocessor(verbose=False)
    started = time.perf_counter()
    check = None
    for case in meta["train"]:
        data, seg, props = preprocessor.run_case_npy(arrays[f"train/{case}/data"].astype(np.float32), arrays[f"train/{case}/seg"].astype(np.float32),
                                                     dict(properties[f"train/{case}"]), plans, configuration, dataset_json)  # fmt: skip
        data, seg = data.astype(np.float32, copy=False), seg.astype(np.int16, copy=False)
        if case == meta["check"]["case"]:
            check = {"data_sha256": _sha(data), "seg_sha256": _sha(seg)}
        blocks, chunks = comp_blosc2_params(data.shape, tuple(configuration.patch_size), data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(configuration.patch_size), seg.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, props, str(out / case), chunks=chunks, blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)
    expected = {k: v for k, v in meta["check"].items() if k != "case"}
    if check != expected:
        raise SystemExit(f"preprocessing here differs from nnU-Net's run on the packing machine ({meta['check']['case']}: "
                         f"{check} vs {expected}); the run would not be nnU-Net's")  # fmt: skip
    held_out = {k.split("/")[1]: (arrays[k].astype(np.float32), properties[k.rsplit("/", 1)[0]])
                for k in arrays if k.startswith("held_out/")}  # fmt: skip
    return {"preprocess_s": round(time.perf_counter() - started, 1), "matches_packing_machine": True}, held_out


def train(args) -> None:
    _simpleitk_stand_in()
    os.environ.setdefault("nnUNet_compile", "f")
    scratch = Path(args.scratch)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[key] = str(scratch / key)
        (scratch / key).mkdir(parents=True, exist_ok=True)
    import numpy as np
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: `train` is for a lent GPU machine (the CPU run is benchmarks/nnunet_long.py)")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from cervicontour.baselines.nnunet_trainer import build_trainer, training_clock

    started = time.perf_counter()
    meta = json.loads((args.pack / "meta.json").read_text())
    dataset = meta["prepared"]["dataset"]
    target = scratch / "nnUNet_preprocessed"
    shutil.copytree(args.pack / "nnUNet_preprocessed" / dataset, target / dataset, dirs_exist_ok=True)
    prep, held_out = _preprocess(args, meta, target)
    groups = {k: v[: args.held_out] for k, v in meta["prepared"]["cases"].items()}
    print(f"[{time.strftime('%H:%M:%S')}] preprocessed {len(meta['train'])} cases in {prep['preprocess_s']} s; identical to the packing machine's", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masks: dict = {}
    record = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (smoke run)", "torch": torch.__version__, "cuda": torch.version.cuda,
              "pack": meta, "preprocess": prep, "budget_s": args.budget_s, "every_s": args.every_s, "points": [], "finished": None}  # fmt: skip

    def save() -> None:
        partial = out / "masks.npz.partial"
        with partial.open("wb") as handle:
            np.savez_compressed(handle, **masks)
        os.replace(partial, out / "masks.npz")
        (out / "run.json.partial").write_text(json.dumps(record, indent=1, default=str))
        os.replace(out / "run.json.partial", out / "run.json")

    def predict(trainer, cases: list[str], point: int) -> float:
        begin = time.perf_counter()
        trainer.set_deep_supervision_enabled(False)
        trainer.network.eval()
        try:
            predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=True,
                                        device=trainer.device, allow_tqdm=False)  # fmt: skip
            predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                            [{k: v.detach().clone() for k, v in trainer.network.state_dict().items()}],
                                            trainer.dataset_json, type(trainer).__name__, trainer.inference_allowed_mirroring_axes)  # fmt: skip
            for case in cases:
                image, props = held_out[case]
                labels, probabilities = predictor.predict_single_npy_array(image, {"spacing": props["spacing"]}, None, None, True)
                if trainer.label_manager.has_regions:  # overlapping structures: each region's sigmoid > 0.5
                    binary = np.asarray(probabilities) > 0.5  # (regions, z, y, x), nnU-Net's SimpleITK order
                    masks[f"p{point}/{case}"] = np.packbits(binary.ravel())
                    masks[f"p{point}/{case}/shape"] = np.asarray(binary.shape)
                else:  # disjoint structures: nnU-Net's own label map (softmax argmax), as `import_predictions` reads it
                    masks[f"p{point}/{case}/labels"] = np.asarray(labels, dtype=np.uint8)
        finally:
            trainer.set_deep_supervision_enabled(trainer.enable_deep_supervision)
            trainer.network.train()
        return time.perf_counter() - begin

    def after_epoch(trainer) -> bool:
        clock = training_clock(trainer)
        if record["nnunet"].get("parameters") is None:
            record["nnunet"]["parameters"] = sum(p.numel() for p in trainer.network.parameters())
        last = record["points"][-1]["train_wall_s"] if record["points"] else 0.0
        over = clock["wall_s"] >= args.budget_s or time.perf_counter() - started >= args.deadline_s
        print(f"[{time.strftime('%H:%M:%S')}] epoch {clock['epochs']}: {clock['iterations']} iterations, {clock['wall_s']:.0f} s training wall, "
              f"loss {trainer.logger.get_value('train_losses', step=-1):.4f}", flush=True)  # fmt: skip
        if over or clock["wall_s"] - last >= args.every_s:
            cases = groups["val"] + (groups["test"] if over else [])
            point = len(record["points"])
            seconds = predict(trainer, cases, point)
            record["points"].append({"point": point, "epoch": clock["epochs"], "iterations": clock["iterations"],
                                     "train_wall_s": round(clock["wall_s"], 1), "train_cpu_s": round(clock["cpu_s"] or 0.0, 1),
                                     "eval_s": round(seconds, 1), "cases": cases, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
            if over:
                record["finished"] = {"reason": f"{clock['wall_s']:.0f} s training wall (budget {args.budget_s:.0f} s)",
                                      "session_s": round(time.perf_counter() - started, 1)}  # fmt: skip
            save()
            print(f"  point {point}: predicted {len(cases)} cases in {seconds:.1f} s", flush=True)
        return over

    trainer = build_trainer(target / dataset, plans_name="nnUNetPlans", configuration="3d_fullres", fold="all", device=args.device,
                            continue_training=False, num_epochs=1000, iterations_per_epoch=args.iterations_per_epoch, save_every=1000,
                            after_epoch=after_epoch)  # fmt: skip
    cm = trainer.configuration_manager
    record["nnunet"] = {
        "version": _version("nnunetv2"), "plans_name": "nnUNetPlans", "configuration": "3d_fullres",
        "patch_size": list(cm.patch_size), "batch_size": cm.batch_size, "spacing": list(cm.spacing),
        "num_epochs": trainer.num_epochs, "iterations_per_epoch": trainer.num_iterations_per_epoch,
        "initial_lr": trainer.initial_lr, "region_based": trainer.label_manager.has_regions, "fold": "all",
        "changes_from_defaults": [
            "stopped after --budget-s of training wall time (nnU-Net: 1000 epochs); the poly learning rate follows nnU-Net's 1000-epoch schedule",
            "torch.compile off (nnUNet_compile=f): compiling would take a large share of a minutes-long budget",
            "no checkpoint until the end (nnU-Net: every 50 epochs), no final validation of nnU-Net's own",
            "preprocessing from arrays read by nnU-Net's SimpleITKIO on the packing machine (hash-checked identical)",
            "curve evaluation: sliding window without test-time mirroring; region sigmoid > 0.5",
        ],
    }  # fmt: skip
    record["nnunet"]["parameters"] = sum(p.numel() for p in trainer.network.parameters()) if trainer.network is not None else None
    save()
    trainer.run_training()
    record["session_s"] = round(time.perf_counter() - started, 1)
    save()
    print(json.dumps({k: record[k] for k in ("device", "points", "finished", "session_s")}, indent=1, default=str))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- 3. score (here)
def score(args) -> None:
    import numpy as np

    from cervicontour.baselines.nnunet_curve import SCHEMA, held_out_cases, cohorts
    from cervicontour.baselines.nnunet_encoding import RegionEncoding
    from cervicontour.cohort import write_case
    from cervicontour.io import write_text_atomic
    from cervicontour.metrics.cohort import evaluate_cohort
    from cervicontour.metrics.overlap import dice

    cfg = config()
    run = json.loads((args.run / "run.json").read_text())
    if run["pack"]["config_sha256"] != cfg.digest():
        raise SystemExit(f"{args.run}/run.json was trained on another configuration ({run['pack']['config']})")
    folders = cohorts(cfg, args.work)
    references = {case: c for group in held_out_cases(folders).values() for case, c in group.items()}
    dataset_json = json.loads((args.work / "nnUNet_preprocessed" / run["pack"]["prepared"]["dataset"] / "dataset.json").read_text())
    encoding = RegionEncoding.from_dataset_json(dataset_json)
    with np.load(args.run / "masks.npz") as stored:
        packed = {k: stored[k] for k in stored.files}

    undetermined = {}

    @functools.cache
    def image(case: str):
        return references[case].load_image()

    @functools.cache
    def reference(case: str, structure: str):
        return references[case].load_structure(structure).array

    def volumes(point: int, case: str) -> dict:
        """The prediction on the case's CT grid, from one of the three forms ``train`` has stored:
        a label map (disjoint structures), region masks, or (the first GPU run's form) each softmax
        channel > 0.5, where a voxel with no channel above 0.5 counts as background (counted)."""
        key = f"p{point}/{case}"
        grid = image(case)
        if f"{key}/labels" in packed:
            masks = encoding.decode(packed[f"{key}/labels"].transpose(2, 1, 0))
        else:
            shape = tuple(int(n) for n in packed[f"{key}/shape"])
            binary = np.unpackbits(packed[key], count=int(np.prod(shape))).reshape(shape).astype(bool).transpose(0, 3, 2, 1)
            if encoding.is_region_based:
                masks = {s: binary[i] for i, s in enumerate(encoding.structures)}
            elif shape[0] == encoding.num_labels + 1:
                labels = np.zeros(binary.shape[1:], np.uint8)
                for value in range(1, shape[0]):
                    labels[binary[value]] = value
                undetermined[key] = int((binary.sum(0) == 0).sum())
                masks = encoding.decode(labels)
            else:
                raise SystemExit(f"{key}: {shape[0]} channels; expected {encoding.num_labels + 1} for this dataset.json")
        if any(m.shape != grid.array.shape for m in masks.values()):
            raise SystemExit(f"{case}: prediction shape {next(iter(masks.values())).shape} is not its CT's {grid.array.shape}")
        return {s: grid.with_array(m.astype(np.uint8)) for s, m in masks.items()}

    points = []
    for point in run["points"]:
        val = [c for c in point["cases"] if c.startswith("VAL_")]
        scores = {}
        per_case = {case: volumes(point["point"], case) for case in val}
        for s in cfg.structures:
            cases = {case: dice(reference(case, s), per_case[case][s].array) for case in val}
            scores[s] = {"mean": float(np.nanmean(list(cases.values()))), "cases": cases}
        points.append({k: point[k] for k in ("epoch", "iterations", "train_wall_s", "train_cpu_s", "eval_s", "time")} | {"dice": scores})
        print(f"{point['iterations']:>6} iterations {point['train_wall_s']:>6.0f} s: " + ", ".join(f"{s} {d['mean']:.3f}" for s, d in scores.items()))
    final = run["points"][-1]
    tests = [c for c in final["cases"] if c.startswith("TEST_")]
    pred = ROOT / "out" / "nnunet_gpu" / "test_pred"
    shutil.rmtree(pred, ignore_errors=True)
    for case in tests:
        write_case(pred, references[case].patient_id, None, volumes(final["point"], case))
    nn = run["nnunet"]
    (pred / "method.json").write_text(json.dumps({
        "train_seconds": final["train_wall_s"], "predict_seconds_per_case": round(final["eval_s"] / len(final["cases"]), 2),
        "notes": (f"nnU-Net v2 {nn['version']}, its default {nn['configuration']} plan (patch {nn['patch_size']}, batch {nn['batch_size']}), "
                  f"trained {final['train_wall_s']:.0f} s wall ({final['epoch']} epochs x {nn['iterations_per_epoch']} iterations, AMP) "
                  f"and predicted on a lent {run['device']} (sliding window, no mirroring; predict seconds include nnU-Net's "
                  "preprocessing there): a GPU's seconds, not this CPU's; curve and changes from nnU-Net's defaults in "
                  "benchmarks/results/nnunet_gpu_curve.json"),
    }, indent=1))  # fmt: skip
    evaluation = evaluate_cohort(folders["test"], pred, structures=list(cfg.structures))
    from cervicontour.metrics.summary import summarize

    test = {"summary": summarize(evaluation.rows, evaluation.metric_columns), "rows": evaluation.rows}
    record = {"schema": SCHEMA, "config": cfg.to_json(), "config_sha256": cfg.digest(), "data": cfg.describe_data(),
              "device": run["device"], "torch": run["torch"], "cuda": run["cuda"], "nnunet": run["nnunet"],
              "preprocess": run["preprocess"], "points": points, "finished": run["finished"], "session_s": run.get("session_s"),
              "undetermined_voxels": undetermined or None,
              "test": {"patients": len(tests), "predictions": str(pred.relative_to(ROOT)), "iterations": final["iterations"],
                       "train_wall_s": final["train_wall_s"], "metrics": test}}  # fmt: skip
    write_text_atomic(args.curve, json.dumps(record, indent=1, default=float))
    print(f"wrote {args.curve}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--pack", type=Path, default=PACK)
    t = sub.add_parser("train")
    t.add_argument("--pack", type=Path, default=PACK)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--scratch", type=Path, default=Path("/tmp/nnunet_gpu"))
    t.add_argument("--budget-s", type=float, default=360.0, help="training wall seconds")
    t.add_argument("--every-s", type=float, default=90.0, help="training wall seconds between two validation points")
    t.add_argument("--device", default="cuda", help="cpu: a smoke run of this step (with --iterations-per-epoch 2 --held-out 1)")
    t.add_argument("--iterations-per-epoch", type=int, default=250)
    t.add_argument("--held-out", type=int, default=None, help="predict only the first N validation and N test patients")
    t.add_argument("--deadline-s", type=float, default=480.0, help="end after this many seconds of the whole step, whatever the budget")
    s = sub.add_parser("score")
    s.add_argument("--run", type=Path, required=True)
    s.add_argument("--work", type=Path, default=WORK)
    s.add_argument("--curve", type=Path, default=RESULT)
    args = parser.parse_args()
    {"pack": pack, "train": train, "score": score}[args.step](args)


if __name__ == "__main__":
    main()

"""Predict seconds per case, ours vs nnU-Net, measured in one run on this CPU (issue 20).

Both in this process, the CT already in memory, masks back on the CT's grid; the cases alternate
between the two methods so the machine's state (other jobs, clocks) weighs on both alike:
- ours: :func:`cervicontour.inference.case.predict_case` with the shipped default model (rules enforced,
  CTVn composed from the default nodal groups), loaded once before the clock;
- nnU-Net v2: ``nnUNetPredictor.predict_single_npy_array`` (its preprocessing, sliding window with
  tile step 0.5 and Gaussian weighting, no mirroring, resampling back, probabilities returned as
  the import needs them) with the network of its default 3d_fullres plan for these phantoms
  (``out/nnunet_gpu/work``: the plan the GPU run trained). The GPU run's weights stayed on the GPU
  machine (a 30 M-parameter checkpoint does not fit what comes back), so the network here has
  nnU-Net's own initialisation: the sliding window's arithmetic does not depend on the weights'
  values (no step skips work by what it finds), so its seconds are those of the trained network.
  The CPU plan (4 mm, the plan the CPU curve trains) is timed the same way when its plans exist.

Data: the comparison's test patients (synthetic phantom 1, size small, seed 3003), the first ``--cases``.
Writes benchmarks/results/predict_side_by_side.json: wall and process-CPU seconds per case and method.

Usage: python benchmarks/predict_side_by_side.py [--cases 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "nnunet_gpu" / "work"


def nnunet_predictor(preprocessed: Path, plans_name: str, threads: int):
    """nnU-Net's predictor around its plan's network (nnU-Net's initialisation), on the CPU."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(str(preprocessed / f"{plans_name}.json"))
    configuration = plans.get_configuration("3d_fullres")
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    heads = plans.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainer.build_network_architecture(plans, configuration, 1, heads, enable_deep_supervision=False)
    torch.set_num_threads(threads)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)  # fmt: skip
    predictor.manual_initialization(network, plans, configuration, [network.state_dict()], dataset_json, "nnUNetTrainer", None)
    info = {"plans": plans_name, "patch_size": list(configuration.patch_size), "spacing": list(configuration.spacing),
            "parameters": sum(p.numel() for p in network.parameters())}  # fmt: skip
    return predictor, info


def main() -> None:
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from cervicontour.cohort import load_cohort
    from cervicontour.io import write_text_atomic
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.case import predict_case

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict_side_by_side.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    test = load_cohort(WORK / "data" / "test").cases()[: args.cases]
    pre = WORK / "nnUNet_preprocessed" / "Dataset702_Cervix"
    methods = {"ours (default model)": None}
    predictors = {"nnU-Net default plan": nnunet_predictor(pre, "nnUNetPlans", args.threads)}
    cpu_plans = sorted(ROOT.glob("out/**/nnUNet_preprocessed/*/nnUNetPlans_cpu.json"))
    if cpu_plans:
        predictors["nnU-Net CPU plan"] = nnunet_predictor(cpu_plans[0].parent, "nnUNetPlans_cpu", args.threads)
    model = load_model("default")
    methods.update({k: v[1] for k, v in predictors.items()})
    times: dict[str, list[dict]] = {name: [] for name in methods}
    reader = SimpleITKIO()
    for case in test:
        image = case.load_image()
        array, props = reader.read_images([str(case.image_path)])
        for name in methods:
            wall, cpu = time.perf_counter(), time.process_time()
            if name.startswith("ours"):
                predict_case(image, model)
            else:
                predictors[name][0].predict_single_npy_array(array, {"spacing": props["spacing"]}, None, None, True)
            times[name].append({"case": case.patient_id, "wall_s": round(time.perf_counter() - wall, 2),
                                "cpu_s": round(time.process_time() - cpu, 2)})  # fmt: skip
            print(f"{case.patient_id} {name}: {times[name][-1]['wall_s']} s wall, {times[name][-1]['cpu_s']} s CPU", flush=True)
    record = {
        "data": f"synthetic phantom 1, size small, test seed 3003, the first {len(test)} patients (shape {image.array.shape})",
        "threads": args.threads, "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_1min_at_start": load, "torch": torch.__version__,
        "methods": {name: {"info": methods[name], "cases": rows, "median_wall_s": statistics.median(r["wall_s"] for r in rows),
                           "median_cpu_s": statistics.median(r["cpu_s"] for r in rows)} for name, rows in times.items()},
        "note": "nnU-Net's networks carry nnU-Net's initialisation (see the module docstring): seconds, not accuracy",
    }  # fmt: skip
    write_text_atomic(args.out, json.dumps(record, indent=1))
    for name, row in record["methods"].items():
        print(f"{name:24s} median {row['median_wall_s']:6.1f} s wall, {row['median_cpu_s']:6.1f} s CPU per case")


if __name__ == "__main__":
    main()

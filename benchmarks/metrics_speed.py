"""Speed of the surface metrics: ours vs DeepMind surface-distance vs MONAI, on one machine, one run.

Usage::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/metrics_speed.py [--repeats 5] [--out FILE]

Measures, on a synthetic 512×512×200 CT grid at 0.98×0.98×2.5 mm:

1. the surface set (HD, HD95, ASSD, surface Dice at 2.5 mm) for one bladder-sized pair, through
   ``cervicontour.metrics`` (both boundary models), DeepMind ``surface-distance`` and MONAI,
   all on the same C-ordered bool arrays (the layout each library is fastest on), and again on
   the Fortran-ordered arrays ``read_nifti`` returns;
2. a whole ``evaluate`` row set (every metric, 5 structures) for one case, from memory and
   from NIfTI files;
3. the same surface set on a real WORD bladder (``../shared/data/real/word``) when present.

Each time is the best of ``--repeats`` runs after one warm-up, the libraries taking turns run by
run so that load from other processes hits them alike (noise only
ever adds time); the medians and the machine's load average are saved beside them. It prints a
table and writes every number to ``benchmarks/results/metrics_speed.json``. Nothing here is
asserted by tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from cervicontour.metrics import evaluate_case, evaluate_pair, surface_distances  # noqa: E402
from cervicontour.metrics.evaluate import EvaluationSettings  # noqa: E402
from cervicontour.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (512, 512, 200)
SPACING = (0.98, 0.98, 2.5)
TOLERANCE_MM = 2.5
WORD = ROOT.parent / "shared" / "data" / "real" / "word" / "labels" / "word_0023.nii.gz"

# (name, centre index, semi-axes mm, perturbation amplitude): roughly pelvic sizes
STRUCTURES = (
    ("Bladder", (256, 300, 90), (45.0, 35.0, 40.0), 0.08),
    ("Anorectum", (256, 360, 80), (14.0, 14.0, 70.0), 0.10),
    ("CTVn", (256, 290, 120), (80.0, 40.0, 90.0), 0.08),
    ("CTVp", (256, 330, 100), (30.0, 28.0, 40.0), 0.10),
    ("Parametrium", (256, 330, 95), (55.0, 18.0, 20.0), 0.12),
)


def perturbed_ellipsoid(centre, semi_axes_mm, amplitude, seed, shift_vox=(0, 0, 0)) -> np.ndarray:
    """A bool mask: an ellipsoid whose radius varies smoothly by ±``amplitude`` (seeded)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, bool)
    reach = [int(np.ceil(a * (1 + 2 * amplitude) / s)) + 2 for a, s in zip(semi_axes_mm, SPACING)]
    lo = [max(c + d - r, 0) for c, d, r in zip(centre, shift_vox, reach)]
    hi = [min(c + d + r + 1, n) for c, d, r, n in zip(centre, shift_vox, reach, SHAPE)]
    axes = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
    radius = sum(((g - c - d) * s / a) ** 2 for g, c, d, s, a in zip(axes, centre, shift_vox, SPACING, semi_axes_mm))
    noise = ndimage.gaussian_filter(rng.standard_normal(radius.shape), sigma=(8, 8, 3))
    noise /= np.abs(noise).max()
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = np.sqrt(radius) <= 1 + amplitude * noise
    return mask


def structure_pair(index: int) -> tuple[np.ndarray, np.ndarray]:
    name, centre, semi_axes, amplitude = STRUCTURES[index]
    ref = perturbed_ellipsoid(centre, semi_axes, amplitude, seed=2 * index)
    pred = perturbed_ellipsoid(centre, semi_axes, amplitude, seed=2 * index + 1, shift_vox=(2, -1, 1))
    return ref, pred


MEDIANS: dict[str, float] = {}


def timed(func, repeats: int, label: str = "") -> tuple[float, object]:
    """Best time of ``repeats`` runs after a warm-up; the median goes to ``MEDIANS[label]``."""
    result = func()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    if label:
        MEDIANS[label] = statistics.median(times)
    return min(times), result


def ours(ref, pred, spacing, boundary):
    d = surface_distances(ref, pred, spacing, boundary=boundary)
    return d.hausdorff_mm(), d.hd95_mm(), d.assd_mm(), d.surface_dice(TOLERANCE_MM)


def deepmind(ref, pred, spacing):
    import surface_distance as sd

    r = sd.compute_surface_distances(ref, pred, spacing)
    directed = sd.compute_average_surface_distance(r)
    return (
        sd.compute_robust_hausdorff(r, 100),
        sd.compute_robust_hausdorff(r, 95),
        directed,
        sd.compute_surface_dice_at_tolerance(r, TOLERANCE_MM),
    )


def monai_set(y_pred, y, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    kw = {"include_background": True, "spacing": list(spacing)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecated argument
        return (
            compute_hausdorff_distance(y_pred, y, **kw).item(),
            compute_hausdorff_distance(y_pred, y, percentile=95, **kw).item(),
            compute_average_surface_distance(y_pred, y, symmetric=True, **kw).item(),
            compute_surface_dice(y_pred, y, [TOLERANCE_MM], **kw).item(),
        )


def interleaved(funcs: dict, repeats: int, tag: str) -> dict:
    """Best time of each function, runs interleaved so load from other processes hits all alike."""
    results = {name: func() for name, func in funcs.items()}  # warm-up
    times: dict = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            results[name] = func()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        MEDIANS[f"{tag}{name}"] = statistics.median(values)
    return {name: (min(values), results[name]) for name, values in times.items()}


def surface_set_timings(ref, pred, spacing, repeats: int, *, with_monai: bool, tag: str) -> dict:
    ref, pred = np.ascontiguousarray(ref, bool), np.ascontiguousarray(pred, bool)
    # the layout read_nifti returns: array[i, j, k] viewing SimpleITK's [k, j, i] C buffer
    ref_f, pred_f = np.asfortranarray(ref), np.asfortranarray(pred)
    out: dict = {"reference_voxels": int(ref.sum()), "prediction_voxels": int(pred.sum())}
    runs = interleaved(
        {
            "ours_voxel6": lambda: ours(ref, pred, spacing, "voxel6"),
            "ours_surfel": lambda: ours(ref, pred, spacing, "surfel"),
            "deepmind": lambda: deepmind(ref, pred, spacing),
            "ours_surfel_nifti_layout": lambda: ours(ref_f, pred_f, spacing, "surfel"),
            "deepmind_nifti_layout": lambda: deepmind(ref_f, pred_f, spacing),
        },
        repeats,
        tag,
    )
    for name, (seconds, _) in runs.items():
        out[f"{name}_s"] = seconds
    dm = runs["deepmind"][1]
    out["values"] = {
        "ours_voxel6": runs["ours_voxel6"][1],
        "ours_surfel": runs["ours_surfel"][1],
        "deepmind": [dm[0], dm[1], list(dm[2]), dm[3]],
    }
    if with_monai:
        import torch

        y = torch.from_numpy(ref)[None, None].float()
        y_pred = torch.from_numpy(pred)[None, None].float()
        out["monai_s"], mo = timed(lambda: monai_set(y_pred, y, spacing), max(1, repeats // 2), f"{tag}monai")
        out["values"]["monai"] = mo
        out["torch_threads"] = torch.get_num_threads()
    out["speedup_surfel_vs_deepmind"] = out["deepmind_s"] / out["ours_surfel_s"]
    out["speedup_voxel6_vs_deepmind"] = out["deepmind_s"] / out["ours_voxel6_s"]
    if with_monai:
        out["speedup_voxel6_vs_monai"] = out["monai_s"] / out["ours_voxel6_s"]
    return out


def evaluate_timings(repeats: int) -> dict:
    pairs = [structure_pair(i) for i in range(len(STRUCTURES))]
    volumes = [(Volume(r.view(np.uint8), SPACING), Volume(p.view(np.uint8), SPACING)) for r, p in pairs]
    out: dict = {"structures": {s[0]: float(r.sum() * np.prod(SPACING) / 1000) for s, (r, _) in zip(STRUCTURES, pairs)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 1 and 2 mm tolerances are below the 2.5 mm slices
        for boundary in ("voxel6", "surfel"):
            out[f"in_memory_{boundary}_s"], _ = timed(
                lambda b=boundary: [evaluate_pair(r, p, tolerances_mm=(1.0, 2.0, 3.0), boundary=b) for r, p in volumes],
                repeats,
                f"evaluate_in_memory_{boundary}",
            )
        from cervicontour.cohort import load_cohort, write_case

        with tempfile.TemporaryDirectory() as tmp:
            names = [s[0] for s in STRUCTURES]
            image = Volume(np.zeros(SHAPE, np.int16), SPACING)
            write_case(Path(tmp) / "ref", "case", image, {n: v[0] for n, v in zip(names, volumes)})
            write_case(Path(tmp) / "pred", "case", None, {n: v[1] for n, v in zip(names, volumes)})
            ref_case = load_cohort(Path(tmp) / "ref")["case"]
            pred_case = load_cohort(Path(tmp) / "pred")["case"]
            out["with_nifti_reads_voxel6_s"], _ = timed(
                lambda: evaluate_case(ref_case, pred_case, names, EvaluationSettings()),
                max(1, repeats // 2),
                "evaluate_with_nifti_reads_voxel6",
            )
    return out


def word_pair():
    from cervicontour.io import read_nifti

    labels = read_nifti(WORD)
    ref = labels.array == 14
    pred = ndimage.binary_dilation(np.roll(ref, (2, -1, 1), axis=(0, 1, 2)))
    return ref, pred, labels.spacing_mm, labels.shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "metrics_speed.json")
    parser.add_argument("--no-monai", action="store_true", help="skip MONAI (slowest)")
    args = parser.parse_args()

    import scipy
    import surface_distance  # noqa: F401  (fail early if the test dependency is missing)

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}
    if not args.no_monai:
        import monai
        import torch

        versions.update({"monai": monai.__version__, "torch": torch.__version__})
    result: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": versions,
        "grid": {"shape": SHAPE, "spacing_mm": SPACING},
        "repeats": args.repeats,
        "statistic": "best of `repeats` runs after one warm-up, seconds (medians under `medians_s`)",
        "load_average_at_start": os.getloadavg(),
        "surface_set": "HD + HD95 + ASSD + surface Dice at 2.5 mm, one structure pair",
    }
    ref, pred = structure_pair(0)
    volume_cc = ref.sum() * np.prod(SPACING) / 1000
    print(f"bladder-sized pair on {SHAPE} at {SPACING} mm: {volume_cc:.0f} cc ...", flush=True)
    result["synthetic_bladder"] = surface_set_timings(
        ref, pred, SPACING, args.repeats, with_monai=not args.no_monai, tag="synthetic_"
    )
    print("evaluate rows, 5 structures ...", flush=True)
    result["evaluate_case"] = evaluate_timings(args.repeats)
    if WORD.is_file():
        print(f"real WORD bladder {WORD.name} ...", flush=True)
        ref, pred, spacing, shape = word_pair()
        result["word_bladder"] = {
            "file": WORD.name, "shape": shape, "spacing_mm": spacing,
            **surface_set_timings(ref, pred, spacing, args.repeats, with_monai=not args.no_monai, tag="word_"),
        }  # fmt: skip
    result["medians_s"] = dict(MEDIANS)
    result["load_average_at_end"] = os.getloadavg()
    e = result["evaluate_case"]
    s = result["synthetic_bladder"]
    result["criteria"] = {
        "surfel_at_least_2.5x_faster_than_deepmind": s["speedup_surfel_vs_deepmind"] >= 2.5,
        "evaluate_5_structures_in_memory_at_most_1s": e["in_memory_voxel6_s"] <= 1.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(markdown_table(result))
    print(f"saved {args.out}")


def markdown_table(result: dict) -> str:
    lines = [
        "| pair | ours voxel6 (s) | ours surfel (s) | DeepMind (s) | MONAI (s) | DeepMind / ours surfel |",
        "|---|---|---|---|---|---|",
    ]
    pairs = (("synthetic_bladder", "synthetic bladder, 512×512×200"), ("word_bladder", "WORD bladder (real)"))
    for key, label in pairs:
        if key not in result:
            continue
        r = result[key]
        monai = f"{r['monai_s']:.3f}" if "monai_s" in r else "–"
        lines.append(
            f"| {label} | {r['ours_voxel6_s']:.3f} | {r['ours_surfel_s']:.3f} | {r['deepmind_s']:.3f} | {monai} | "
            f"{r['speedup_surfel_vs_deepmind']:.1f}× |"
        )
        ratio = r["deepmind_nifti_layout_s"] / r["ours_surfel_nifti_layout_s"]
        lines.append(
            f"| {label}, NIfTI (Fortran) layout | – | {r['ours_surfel_nifti_layout_s']:.3f} | "
            f"{r['deepmind_nifti_layout_s']:.3f} | – | {ratio:.1f}× |"
        )
    e = result["evaluate_case"]
    lines += [
        "",
        "| evaluate, all metrics, 5 structures, one 512×512×200 case | seconds |",
        "|---|---|",
        f"| in memory, voxel6 | {e['in_memory_voxel6_s']:.3f} |",
        f"| in memory, surfel | {e['in_memory_surfel_s']:.3f} |",
        f"| including reading 10 NIfTI masks, voxel6 | {e['with_nifti_reads_voxel6_s']:.3f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

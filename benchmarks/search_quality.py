"""Search quality on real images: first-order DARTS against CDARTS and two ablations, side by side.

    .venv/bin/python benchmarks/search_quality.py --quick                 # a short run: proves it runs
    .venv/bin/python benchmarks/search_quality.py                         # digits: docs/results/search_quality_digits*
    .venv/bin/python benchmarks/search_quality.py --data DATA/cifar-10-batches-py --device cuda --subset 10000

Arms (same data, same seed, same schedule; only the named term differs):

* ``darts``            -- first-order DARTS (alpha on the search network's val cross-entropy);
* ``cdarts-noskip``    -- CDARTS without the Eq. 11 skip penalty (lambda' = 0);
* ``cdarts-nodistill`` -- CDARTS without introspective distillation (lambda = 0);
* ``cdarts``           -- full CDARTS (paper Section 3.2).

Per epoch and arm it prints the softmax mass of skip_connect in the normal cell (mean over edges),
the skip edges of the derived normal cell and the normalised alpha entropy.  At the end every
derived genotype is trained from scratch with the same budget and scored on held-out images that
the search never saw.  Writes ``skip_mass.png`` and ``results.json`` to ``--out``.

Data: ``--data`` is an ImageFolder with ``train/`` and ``val/`` (``tools/prepare_digits.py`` writes
scikit-learn's digits that way; without ``--data`` the script runs it into a temporary folder) or a
CIFAR python-batch folder (search on the training batches, held-out score on the test batch).
The search uses ``train/`` split in halves (w_S / alpha and w_E, as in the paper); ``val/`` is held out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]

from backbones.darts_net import DartsNet  # noqa: E402
from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.data.cifar import load_cifar
from cdarts_deploy.data.distributed import DistContext  # noqa: E402
from cdarts_deploy.drawing.figures import pyplot, save_figure
from search.cell_space import CellSpace  # noqa: E402
from search.config import SearchConfig, resolved_defaults  # noqa: E402
from search.data import SearchData  # noqa: E402
from search.trainer import CyclicSearch  # noqa: E402

ARMS: dict[str, dict[str, Any]] = {
    "darts": dict(method="darts", reg_lambda=0.0),
    "cdarts-noskip": dict(method="cdarts", reg_lambda=0.0),
    "cdarts-nodistill": dict(method="cdarts", distill_lambda=0.0),
    "cdarts": dict(method="cdarts"),
}

# Sizes: (search width, search cells, eval cells, batch, warm-up, search epochs, steps/epoch cap,
#         retrain width, retrain cells, retrain epochs, images for the search, image side)
SETTINGS = {
    "default": dict(width=8, cells=5, eval_cells=8, batch=32, warmup=2, epochs=8, max_steps=0,
                    retrain_width=12, retrain_cells=8, retrain_epochs=10, size=16, subset=0),
    "quick": dict(width=4, cells=3, eval_cells=5, batch=32, warmup=1, epochs=2, max_steps=6,
                  retrain_width=8, retrain_cells=5, retrain_epochs=3, size=16, subset=600),
}


# ----- data ---------------------------------------------------------------------------------------------------


def prepare_digits(folder: Path, size: int) -> Path:
    """scikit-learn's digits as train/ and val/ ImageFolders, written by tools/prepare_digits.py."""
    cmd = [sys.executable, str(REPO / "tools" / "prepare_digits.py"), "--out", str(folder), "--size", str(size)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder


def _read_folder(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            img = Image.open(f).convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(c)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def load_images(data: Path, size: int, subset: int,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(search images, labels, held-out images, labels, classes); CIFAR or an ImageFolder with train/ and val/."""
    if any(data.glob("**/data_batch_1")):
        xs, ys = load_cifar(data, "cifar10", "train")
        xh, yh = load_cifar(data, "cifar10", "test")
        classes = 10
        if size != 32:
            xs = _resize(xs, size)
            xh = _resize(xh, size)
    else:
        if not (data / "train").is_dir() or not (data / "val").is_dir():
            raise SystemExit(f"{data}: expected train/ and val/ ImageFolders (tools/prepare_digits.py) "
                             "or a CIFAR python-batch folder")
        xs, ys, names = _read_folder(data / "train", size)
        xh, yh, _ = _read_folder(data / "val", size)
        classes = len(names)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ys))  # shuffled once: the search's train/val halves are class-mixed
    held = rng.permutation(len(yh))  # folders list images class by class: a cut must not keep only a few classes
    if subset:
        order = order[:subset]
        held = held[: max(200, subset // 3)]
    return xs[order], ys[order], xh[held], yh[held], classes


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def to_tensors(x: np.ndarray, y: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> TensorDataset:
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255)
    return TensorDataset((t - mean[:, None, None]) / std[:, None, None], torch.from_numpy(y))


# ----- one search arm ---------------------------------------------------------------------------------------


def search_arm(name: str, data: SearchData, s: dict, args: argparse.Namespace, device: torch.device,
               out: Path) -> tuple[Any, list[dict]]:
    options = dict(width=s["width"], cells=s["cells"], eval_cells=s["eval_cells"], batch_size=s["batch"],
                   warmup_epochs=s["warmup"], epochs=s["epochs"], max_steps=s["max_steps"], input_size=s["size"],
                   arch_lr=args.arch_lr, seed=args.seed, progress=False, out=str(out), head_mid=32, head_embed=64,
                   export_width=s["retrain_width"], export_cells=s["retrain_cells"])
    options.update(ARMS[name])
    cfg = resolved_defaults(SearchConfig(**options), "cifar")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # every arm starts from the same weights and alpha
    space = CellSpace(cfg, data.num_classes, "cifar", data.input_size, device)
    ctx = DistContext(device=device)
    search = CyclicSearch(cfg, space, data, ctx, out)
    bar = type("Bar", (), {"disable": True})()
    rows = []
    genotype = None
    for epoch in range(search.total_epochs):
        result = search.run_epoch(epoch, bar)
        row, genotype = result["row"], result["genotype"]
        rows.append(row)
        print(f"{name:17} epoch {epoch:2d} [{row['phase']:6}] skip mass {row['skip_mass_normal']:.4f} "
              f"skip edges {row['skip_normal']} alpha entropy {row['alpha_entropy_normal']:.4f} "
              f"val acc (search net) {row.get('val_acc_search', float('nan')):.3f} {row['seconds']:.0f}s", flush=True)
    return genotype, rows


# ----- retraining the derived genotypes -----------------------------------------------------------------------


def retrain(genotype: Any, train: TensorDataset, held_out: TensorDataset, classes: int, s: dict,
            args: argparse.Namespace, device: torch.device) -> float:
    """Held-out accuracy of ``genotype`` trained from scratch (same seed, schedule and budget for every arm)."""
    torch.manual_seed(args.seed)
    net = DartsNet(genotype, layout="cifar", width=s["retrain_width"], cells=s["retrain_cells"],
                   num_classes=classes).to(device)
    loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    epochs = s["retrain_epochs"]
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    net.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(held_out, batch_size=256):
            correct += int((net(x.to(device)).argmax(1) == y.to(device)).sum())
    return correct / len(held_out)


def plot(rows: dict[str, list[dict]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, arm_rows in rows.items():
        ax.plot([r["epoch"] for r in arm_rows], [r["skip_mass_normal"] for r in arm_rows], marker="o", label=name)
    ax.set_xlabel("epoch (warm-up included)")
    ax.set_ylabel("skip_connect softmax mass, normal cell")
    ax.set_title("skip-connection mass per epoch")
    ax.legend()
    fig.tight_layout()
    try:
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="ImageFolder with train/ and val/, or a CIFAR python-batch folder "
                   "(default: scikit-learn's digits written by tools/prepare_digits.py into a temporary folder)")
    p.add_argument("--out", default="runs/search_quality", help="folder for skip_mass.png and results.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes and schedule (~2 minutes): checks that it runs")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch-lr", type=float, default=3e-3,
                   help="Adam lr of alpha, the same for every arm (above the paper's 3e-4: the schedule is short)")
    for key in SETTINGS["default"]:
        p.add_argument("--" + key.replace("_", "-"), type=int, help=f"override (default {SETTINGS['default'][key]}, "
                       f"--quick {SETTINGS['quick'][key]})")
    args = p.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    s = dict(SETTINGS["quick" if args.quick else "default"])
    s.update({k: getattr(args, k) for k in s if getattr(args, k) is not None})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data) if args.data else prepare_digits(Path(tmp) / "digits", s["size"])
        xs, ys, xh, yh, classes = load_images(data_dir, s["size"], s["subset"], args.seed)
    mean = torch.from_numpy(xs.reshape(-1, 3).mean(0) / 255).float()
    std = torch.from_numpy(xs.reshape(-1, 3).std(0) / 255).float().clamp_min(1e-3)
    half = len(ys) // 2
    search_data = SearchData(to_tensors(xs[:half], ys[:half], mean, std), to_tensors(xs[half:], ys[half:], mean, std),
                             classes, "cifar", s["size"])
    retrain_set, held_out = to_tensors(xs, ys, mean, std), to_tensors(xh, yh, mean, std)
    print(f"data: {data_dir if args.data else 'digits (tools/prepare_digits.py)'}; {len(ys)} search images "
          f"({half} w_S / {len(ys) - half} alpha and w_E), {len(yh)} held out, {classes} classes, "
          f"{s['size']}x{s['size']}; device {device}, torch threads {torch.get_num_threads()}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in s.items()) + f", arch_lr={args.arch_lr}, seed={args.seed}")

    rows: dict[str, list[dict]] = {}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in arms:
            t0 = time.perf_counter()
            genotype, arm_rows = search_arm(name, search_data, s, args, device, Path(tmp) / name)
            search_s = time.perf_counter() - t0
            rows[name] = arm_rows
            t0 = time.perf_counter()
            acc = retrain(genotype, retrain_set, held_out, classes, s, args, device)

            results[name] = {"held_out_acc": acc, "skip_edges_normal": arm_rows[-1]["skip_normal"],
                             "skip_mass_normal": arm_rows[-1]["skip_mass_normal"],
                             "alpha_entropy_normal": arm_rows[-1]["alpha_entropy_normal"],
                             "search_s": round(search_s, 1), "retrain_s": round(time.perf_counter() - t0, 1),
                             "genotype": gt.to_dict(genotype), "epochs": arm_rows}
            print(f"{name:17} retrained from scratch: held-out accuracy {acc:.4f} "
                  f"({results[name]['retrain_s']:.0f}s)", flush=True)

    print(f"\n{'arm':18}{'held-out acc':>14}{'skip edges':>12}{'skip mass':>11}{'entropy':>9}")
    for name, r in results.items():
        print(f"{name:18}{r['held_out_acc']:14.4f}{r['skip_edges_normal']:12d}{r['skip_mass_normal']:11.3f}"
              f"{r['alpha_entropy_normal']:9.3f}")

    write_text(out / "results.json", json.dumps({"settings": s, "arch_lr": args.arch_lr, "seed": args.seed,
                                                 "device": str(device), "arms": results}, indent=1) + "\n")
    plot(rows, out / "skip_mass.png")
    print(f"wrote {out / 'results.json'} and {out / 'skip_mass.png'}; total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

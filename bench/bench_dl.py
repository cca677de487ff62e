"""Throughput and peak memory of forward + backward for each backbone.

Two sizes per backbone: the published architecture on 64-pixel crops / 32^3
patches (``paper``) and the reduced network and input size of the default
training configs (``config``, ``deepnomo/data/dl``). The ROI shape encoder
(``roi_shape``: one 3D ROI patch per patient, opt-in through ``roi_patch``) has
one size, its defaults on the recurrent design's grid (``default``).
On CPU each measurement runs in a fresh process so that peak resident memory
is its own; on CUDA the peak is ``torch.cuda.max_memory_allocated`` (reset per
measurement, all in one process) and ``--amp`` runs the step under bf16 autocast
as training does.

Usage: ``python bench/bench_dl.py [--device cpu|cuda|auto] [--amp] [--reps 5] [--batch 32]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# name -> (backbone kwargs, input shape of one instance, config file for the CPU size)
CASES = {
    "resnet18": ({"in_channels": 3}, (3, 64, 64), "multiscale_pathology.yaml"),
    "se_resnext": ({"in_channels": 1}, (1, 64, 64), "t3n1_t1.yaml"),
    "efficientnet_lite0": ({"in_channels": 3}, (3, 64, 64), "recurrent_petct.yaml"),
    "unet3d": ({"in_channels": 1}, (1, 32, 32, 32), "stage2_t1.yaml"),
    "roi_shape": ({"width": 8}, (1, 18, 36, 36), ""),
}


def measure(name: str, size: str, device: str, reps: int, batch: int, amp: bool = False) -> dict:
    import torch

    from deepnomo.nn.backbones import build_backbone
    from deepnomo.nn.mil import members
    from deepnomo.nn.shape import ROIShapeEncoder
    from deepnomo.paths import PACKAGE_DIR
    from deepnomo.train import TrainConfig, build_model, resolve_device

    kwargs, shape, cfg_file = CASES[name]
    if name == "roi_shape":
        model = ROIShapeEncoder(**kwargs)
    elif size == "paper":
        model = build_backbone(name, **kwargs)
    else:
        cfg = TrainConfig.from_yaml(PACKAGE_DIR / "data" / "dl" / cfg_file)
        model = members(build_model(cfg))[0].encoder  # one ensemble member
        spatial = cfg.patch_size if cfg.input == "patch" else (cfg.crop_size, cfg.crop_size)
        shape = (len(cfg.modalities) if cfg.input == "patch" else cfg.in_channels, *spatial)
    dev = resolve_device(device)
    model.to(dev).train()
    n = batch if len(shape) == 3 else max(1, batch // 2)
    x = torch.randn(n, *shape, device=dev)
    params = sum(p.numel() for p in model.parameters())

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            y = model(x)
        y.float().square().mean().backward()

    for _ in range(3):  # warm-up: oneDNN / cuDNN pick and compile kernels per shape
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]  # median step: robust to other load on the machine
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"backbone": name, "size": size, "device": dev.type + ("+bf16" if amp else ""),
            "params": params,
            "input": "x".join(map(str, (n, *shape))), "inst_per_s": n / sec,
            "ms_per_step": 1000 * sec, "peak_mib": peak, "rss_before_mib": rss0 / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32,
                    help="2D instances per step (3D patches: half as many)")
    ap.add_argument("--one", nargs=2, metavar=("NAME", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.device, args.reps, args.batch, args.amp)))
        return
    import torch

    from deepnomo.train import resolve_device

    try:
        cuda = resolve_device(args.device).type == "cuda"
    except ValueError as exc:
        ap.error(str(exc))
    if args.amp and not cuda:
        ap.error("--amp: bf16 autocast is used on CUDA only")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    print(f"{'backbone':<20}{'size':<8}{'device':<10}{'params':>11}  {'input':<16}"
          f"{'inst/s':>9}{'ms/step':>9}{'peak MiB':>10}")
    for name in CASES:
        for size in ("default",) if name == "roi_shape" else ("paper", "config"):
            if cuda:
                r = measure(name, size, args.device, args.reps, args.batch, args.amp)
            else:
                out = subprocess.run([sys.executable, __file__, "--one", name, size, "--device",
                                      args.device, "--reps", str(args.reps), "--batch",
                                      str(args.batch)], capture_output=True, text=True,
                                     check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['backbone']:<20}{r['size']:<8}{r['device']:<10}{r['params']:>11,}  "
                  f"{r['input']:<16}{r['inst_per_s']:>9.1f}{r['ms_per_step']:>9.1f}"
                  f"{r['peak_mib']:>10.0f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""One-shot precision check for a lent GPU: writes a JSON with every number issue 9 (part 2) asks for.

* fp16 and bf16 (where supported) against fp32 for the UNet forward, a 20-step guided window, the VAE
  round trip and whisper features, with the ``full`` setups (real widths and sizes) and the ``cpu``
  setups (the ones the CPU budgets were measured on), each checked against its budget;
* fp16 range: the largest |activation| of every leaf module of the sd-vae-ft-mse decoder at 256 and
  512 px and of the stage2 UNet at latent 32 and 64, run in fp16 (inf = overflow), against 65504;
* with ``--vae DIR`` (an installed sd-vae-ft-mse folder) the decoder range again on the real weights,
  which is what decides whether any upcast is needed (random weights keep activations O(1-10)).

    .venv/bin/python scripts/gpu_precision_check.py -o precision.json [--vae ~/.../sd-vae-ft-mse]

The JSON is rewritten after every measurement (a run cut by a time limit keeps what it measured).
Exit status 0 when every row is within budget and nothing overflowed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lipsyncctl.checks import precision as measure  # noqa: E402
from lipsyncctl.runner.precision import FP16_MAX  # noqa: E402


def _peak(maxima: dict[str, float]) -> dict[str, object]:
    name, value = max(maxima.items(), key=lambda kv: kv[1])
    return {"max_abs": value, "module": name, "overflow": value >= FP16_MAX, "headroom": FP16_MAX / value}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("precision.json"))
    ap.add_argument("--vae", type=Path, help="a real sd-vae-ft-mse folder for the decoder range check")
    ap.add_argument("--setups", default="cpu,full", help="the quick setups first: a cut run keeps them")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this script is for a GPU (the CPU numbers come from the tests)", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    dtypes = ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    doc: dict[str, object] = {
        "device": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability(device)),
        "torch": torch.__version__, "cuda": torch.version.cuda, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    results: list[dict[str, object]] = []
    doc["results"] = results
    for setup in args.setups.split(","):
        for dt in dtypes:
            for component in measure.MEASUREMENTS:
                r = measure.measure_all(dt, device, setup, components=(component,))[0]
                results.append(r.to_dict())
                print(json.dumps(results[-1]), flush=True)
                args.output.write_text(json.dumps(doc, indent=1) + "\n")  # a run cut short keeps these

    ranges: dict[str, object] = {}
    gen = torch.Generator().manual_seed(0)
    vae = measure.build_vae(gen)
    for size in (256, 512):
        maxima, images = measure.vae_decoder_maxima(vae, size, torch.float16, device)
        ranges[f"vae_decoder_random_{size}"] = {**_peak(maxima), "finite": bool(torch.isfinite(images).all())}
    if args.vae:
        from lipsyncctl.checkpoints.loaders import load_vae

        real = load_vae(args.vae, device=device, dtype=torch.float32)
        for size in (256, 512):
            maxima, images = measure.vae_decoder_maxima(real, size, torch.float16, device)
            ranges[f"vae_decoder_real_{size}"] = {**_peak(maxima), "finite": bool(torch.isfinite(images).all())}
    unet = measure.build_unet(gen).to(device, torch.float16)
    for latent in (32, 64):
        x, audio = measure._unet_inputs(gen, 2, 16, latent)
        out: list[torch.Tensor] = []

        def run(x: torch.Tensor = x, audio: torch.Tensor = audio, out: list[torch.Tensor] = out) -> None:
            out.append(unet(x.to(device, torch.float16), 501, audio.to(device, torch.float16)))

        maxima = measure.activation_maxima(unet, run)
        ranges[f"unet_stage2_latent{latent}"] = {**_peak(maxima), "finite": bool(torch.isfinite(out[0]).all())}
    doc["fp16_range"] = ranges
    ok = all(r["within"] for r in results) and all(v["finite"] and not v["overflow"] for v in ranges.values())
    doc["ok"] = ok
    args.output.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(ranges, indent=1))
    print(f"wrote {args.output}; {'all within budget, no overflow' if ok else 'SOME CHECKS FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

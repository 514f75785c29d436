"""Train the demo model from scratch on generated talking clips (2 CPU cores, a few hours; resumable).

    python -m emo.demo_model.train --work .demo-train

Stages, each resumed from its state file in --work and skipped once its weights are there:
  vae       reconstruction of the training identities' frames
  audio     the tiny wav2vec2 encoder, taught the voice's loudness envelope through a temporary linear head
  cache     the training clips as VAE latents + audio features (what the next stage reads)
  denoiser  ReferenceNet + denoiser + face locator + image/audio projections with Hallo's objective
  decoder   the VAE decoder alone (encoder frozen: the latents keep their meaning), sharper, with an SSIM term
  ship      the EMA weights in the model-directory layout (--ship-to; the repository's demo model by default)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ..checkpoints.model_dir import Models
from ..config import TINY, ModelConfig, demo_config
from ..models.vae import VAE
from ..preprocess.audio_features import AudioEncoder
from .clips import TRAIN_IDENTITIES, identities
from .progress import StageProgress
from .state import EMA

STAGES = ("vae", "audio", "cache", "denoiser", "decoder", "ship")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emo.demo_model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path(".demo-train"), help="state, logs and stage outputs")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--identities", type=int, default=48, help="training identities (seed 0, the demo portrait, first)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--vae-steps", type=int, default=2400)
    p.add_argument("--audio-steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=144, help="training clips in the cache")
    p.add_argument("--clip-seconds", type=float, default=6.0)
    p.add_argument("--denoiser-steps", type=int, default=8000)
    p.add_argument("--decoder-steps", type=int, default=1500)
    p.add_argument("--ship-to", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    ids = identities(TRAIN_IDENTITIES, args.identities)
    record = args.work / "run.json"
    runs = json.loads(record.read_text()) if record.is_file() else []
    runs.append({"args": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(),
                 "processor": platform.processor(), "threads": args.threads, "torch": torch.__version__,
                 "identities": ids})
    record.write_text(json.dumps(runs, indent=1))
    vae_file, audio_file, cache_file = args.work / "vae.pt", args.work / "audio.pt", args.work / "data.pt"
    if "vae" in args.stages and not vae_file.is_file():
        from .train_vae import latent_scale, train_vae

        vae = train_vae(TINY.vae, ids, args.work, args.vae_steps, args.size, progress=StageProgress("vae"))
        scale = latent_scale(vae, ids, args.size)
        torch.save({"state": vae.state_dict(), "scaling_factor": scale}, vae_file)
        print(f"vae: latent scaling factor {scale:.5f}", file=sys.stderr)
    if "audio" in args.stages and not audio_file.is_file():
        from .train_audio import train_audio

        encoder, r = train_audio(TINY.wav2vec, args.work, args.audio_steps, progress=StageProgress("audio"))
        torch.save({"state": encoder.model.state_dict(), "held_out_r": r}, audio_file)
        print(f"audio: held-out openness r {r:.3f}", file=sys.stderr)
    if "cache" in args.stages and not cache_file.is_file():
        from .dataset import build

        cfg, vae, encoder = _stage_models(vae_file, audio_file)
        data = build(ids, vae, cfg.vae.scaling_factor, encoder, args.clips, args.clip_seconds, args.size,
                     progress=StageProgress("cache", every=10))
        data.save(cache_file)
    if "denoiser" in args.stages:
        from .dataset import TrainingData
        from .train_denoiser import fresh_net, train_denoiser

        cfg, _, _ = _stage_models(vae_file, audio_file)
        net, ema = train_denoiser(fresh_net(cfg, 5), TrainingData.load(cache_file), args.work, args.denoiser_steps,
                                  progress=StageProgress("denoiser"))
    decoder_file = args.work / "decoder.pt"
    if "decoder" in args.stages and not decoder_file.is_file():
        from .train_vae import finetune_decoder

        cfg, vae, _ = _stage_models(vae_file, audio_file)
        vae = finetune_decoder(vae, ids, args.work, args.decoder_steps, args.size, progress=StageProgress("decoder"))
        torch.save({"state": vae.state_dict()}, decoder_file)
    if "ship" in args.stages:
        from .train_denoiser import fresh_net
        from .weights import ship

        cfg, vae, encoder = _stage_models(vae_file, audio_file)
        net = fresh_net(cfg, 5)
        blob = torch.load(args.work / "denoiser.state.pt", weights_only=True)
        net.load_state_dict(blob["modules"]["net"])
        ema = EMA(net, 0.999)
        ema.load_state_dict(blob["modules"]["ema"])
        ema.copy_to(net)
        out = ship(Models(cfg, net.eval(), vae, encoder), args.ship_to, training=_training_record(args, runs))
        print(f"ship: wrote {out}", file=sys.stderr)
    return 0


def _stage_models(vae_file: Path, audio_file: Path) -> tuple[ModelConfig, VAE, AudioEncoder]:
    """The demo config (with the trained VAE's latent scale) and the trained VAE and audio encoder."""
    blob = torch.load(vae_file, weights_only=True)
    cfg = demo_config(round(blob["scaling_factor"], 5))  # as the demo preset records it
    vae = VAE(cfg.vae)
    vae.load_state_dict(blob["state"])
    decoder = vae_file.with_name("decoder.pt")  # the fine-tuned decoder, once that stage has run
    if decoder.is_file():
        vae.load_state_dict(torch.load(decoder, weights_only=True)["state"])
    encoder = AudioEncoder(cfg.wav2vec)
    encoder.model.load_state_dict(torch.load(audio_file, weights_only=True)["state"])
    return cfg, vae.eval(), encoder.eval()


def _training_record(args: argparse.Namespace, runs: list[dict]) -> dict:
    """What made the weights: the command, seeds, steps, machine, and every stage's time and last losses."""
    stages = {}
    for name in ("vae", "audio", "denoiser", "decoder"):
        log = args.work / f"{name}.loss.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        losses = [r for r in rows if "loss" in r]
        stages[name] = {"steps": losses[-1]["step"] if losses else 0, "seconds": rows[-1]["seconds"] if rows else 0,
                        "last_loss": losses[-1]["loss"] if losses else None,
                        "validation": [r for r in rows if "validation" in r]}
    audio = torch.load(args.work / "audio.pt", weights_only=True)
    commands = [" ".join(["python -m emo.demo_model.train", *r["args"]]) for r in runs]
    return {"commands": commands, "runs": runs, "stages": stages,
            "audio_held_out_r": audio["held_out_r"], "settings": {k: str(v) for k, v in vars(args).items()}}


if __name__ == "__main__":
    sys.exit(main())

"""The 3D denoising UNet: SD1.5 blocks + audio cross-attention + temporal motion modules.

All conditioning is explicit: reference K/V per spatial transformer, motion-frame features for the mid block,
region masks per resolution level, audio and image tokens, face-locator feature. Frames are folded into the batch
(`(b f) c h w`) everywhere except inside the motion modules. Batch b is the CFG halves, ordered [uncond, cond].
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..kernels.group_norm import group_norm_silu
from .audio_attention import AudioTransformer
from .embeddings import TimestepEmbedding
from .motion_module import MotionModule
from .reference_unet import Block2D
from .transformer import ReferenceKV, RefKV, SpatialTransformer
from .unet_layout import BlockSpec, down_blocks, mid_block, up_blocks
from .unet_walk import walk_unet


class Block3D(Block2D):
    def __init__(self, spec: BlockSpec, cfg: ModelConfig):
        a = cfg.audio_attention
        in_cross = a.placement == "cross_attention"
        super().__init__(spec, cfg.unet, a.dim if in_cross else None, a.scale if in_cross else 1.0)
        u, m = cfg.unet, cfg.motion
        if spec.attention and not in_cross:
            stacked = a.stacked(spec.kind, spec.depth)
            self.audio_modules = nn.ModuleList([
                AudioTransformer(spec.channels, u.heads * (layer.audio_in // u.heads), u.heads, a.dim,
                                 u.norm_num_groups, stacked) for layer in spec.layers])
        use_motion = m.mid_block if spec.kind == "mid" else (
            2 ** spec.depth in m.resolutions and not (spec.kind == "down" and m.decoder_only))
        if use_motion:
            self.motion_modules = nn.ModuleList([
                MotionModule(spec.channels, m.heads, m.num_layers, m.attention_blocks, m.max_len)
                for _ in spec.layers])


class DenoisingUNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        u = cfg.unet
        self.cfg = u
        self.audio_in_cross_attention = cfg.audio_attention.placement == "cross_attention"
        c0 = u.block_out_channels[0]
        self.conv_in = nn.Conv2d(u.in_channels, c0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(c0, u.time_embed_dim, u.flip_sin_to_cos, u.freq_shift)
        self.down_blocks = nn.ModuleList([Block3D(s, cfg) for s in down_blocks(u)])
        self.up_blocks = nn.ModuleList([Block3D(s, cfg) for s in up_blocks(u)])
        self.mid_block = Block3D(mid_block(u), cfg)
        self.conv_norm_out = nn.GroupNorm(u.norm_num_groups, c0, eps=u.norm_eps)
        self.conv_out = nn.Conv2d(c0, u.out_channels, 3, padding=1)

    def spatial_transformers(self) -> list[SpatialTransformer]:
        """The spatial transformers in execution order (pairs with ReferenceUNet's records)."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [t for b in blocks if b.spec.attention for t in b.attentions]

    def reference_kv(self, records: list[torch.Tensor]) -> list[RefKV]:
        """Reference tokens (v, l, c) per transformer -> their self-attention keys/values, (v, heads, l, d) each."""
        return [t.transformer_blocks[0].attn1.kv(r) for t, r in zip(self.spatial_transformers(), records, strict=True)]

    def forward(
        self,
        sample: torch.Tensor,  # (b, 4, f, h, w) noisy latents, b = [uncond, cond] or [cond]
        timestep: torch.Tensor,  # () or (b,) or (1,)
        image_tokens: torch.Tensor,  # (b, t_img, c_ctx)
        audio_tokens: torch.Tensor,  # (b, f, t_audio, c_audio)
        face_feature: torch.Tensor,  # (b, c0, h, w) face-locator output (zeros for uncond)
        masks: list[torch.Tensor],  # per level: (3, h_l*w_l) full / face / lip
        ref_kv: list[RefKV],  # per spatial transformer: keys, values of the reference entries, (E, heads, l, d)
        ref_index: torch.Tensor,  # (f,) int64: the reference entry each cond frame reads
        motion_feats: torch.Tensor,  # (b, n, c_mid, h_mid, w_mid) motion-frame features for the mid block
        motion_scale: torch.Tensor,  # (3,) full / face / lip weights (applied in the mid block, as the reference)
    ) -> torch.Tensor:
        """-> model output (b, 4, f, h, w)."""
        return self.forward_cached(sample, timestep, image_tokens, audio_tokens, face_feature, masks, ref_kv,
                                   ref_index, motion_feats, motion_scale)[0]

    def forward_cached(self, sample: torch.Tensor, timestep: torch.Tensor, image_tokens: torch.Tensor,
                       audio_tokens: torch.Tensor, face_feature: torch.Tensor, masks: list[torch.Tensor],
                       ref_kv: list[RefKV], ref_index: torch.Tensor, motion_feats: torch.Tensor,
                       motion_scale: torch.Tensor, levels: int = 0, deep: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward's inputs -> (model output, deep features). levels = 0: the plain UNet (no features kept).
        levels > 0 and deep None: the full UNet, keeping the input of its last `levels` up blocks ((b f, c, h, w),
        the deep features); levels > 0 with `deep`: only the outer `levels` levels run, `deep` (from a full step,
        of b or more halves: the last b·f rows are read) standing in for everything inside them."""
        b, _, f, hh, ww = sample.shape
        transformers = self.spatial_transformers()
        if len(ref_kv) != len(transformers):
            raise ValueError(f"the denoiser has {len(transformers)} self-attention layers but got {len(ref_kv)} "
                             "reference K/V pairs")
        kv_of = {id(t): pair for t, pair in zip(transformers, ref_kv, strict=True)}
        x = sample.transpose(1, 2).reshape(b * f, -1, hh, ww)  # b c f h w -> (b f) c h w
        temb = self.time_embedding(timestep.reshape(-1).expand(b), x.dtype).repeat_interleave(f, dim=0)
        audio = audio_tokens.reshape(b * f, *audio_tokens.shape[2:])  # b f t c -> (b f) t c
        # EchoMimic: the audio is the cross-attention's context; Hallo: the image tokens (b t c -> (b f) t c), the
        # audio in its own modules
        context = audio if self.audio_in_cross_attention else image_tokens.repeat_interleave(f, dim=0)
        x = self.conv_in(x)
        x = (x.view(b, f, *x.shape[1:]) + face_feature[:, None]).view(b * f, *x.shape[1:])

        def layer(block: Block3D, j: int, x: torch.Tensor) -> torch.Tensor:
            mid = block.spec.kind == "mid"
            if block.spec.attention:
                x, _ = block.attentions[j](x, context, ReferenceKV(*kv_of[id(block.attentions[j])], ref_index))
                if not self.audio_in_cross_attention:
                    x = block.audio_modules[j](x, audio, masks[block.spec.depth], motion_scale if mid else None)
            if hasattr(block, "motion_modules"):
                x = (self._motion_with_frames(block.motion_modules[j], x, motion_feats, b, f) if mid
                     else block.motion_modules[j](x, f))
            return x

        if deep is not None:
            deep = deep[deep.shape[0] - b * f:]  # (b' f) c h w -> the last b halves' rows
        x, kept = walk_unet(self, x, temb, layer, levels=levels, deep=deep) if levels else (
            walk_unet(self, x, temb, layer), None)
        x = self.conv_out(group_norm_silu(x, self.conv_norm_out))
        return x.view(b, f, *x.shape[1:]).transpose(1, 2), kept  # (b f) c h w -> b c f h w

    @staticmethod
    def _motion_with_frames(module: MotionModule, x: torch.Tensor, motion_feats: torch.Tensor, b: int, f: int
                            ) -> torch.Tensor:
        """Run the temporal module over [motion frames ‖ clip frames] and keep the clip frames."""
        n = motion_feats.shape[1]
        h = torch.cat([motion_feats.to(x.dtype), x.view(b, f, *x.shape[1:])], dim=1)  # b (n+f) c h w
        h = module(h.reshape(b * (n + f), *x.shape[1:]), n + f)
        return h.view(b, n + f, *x.shape[1:])[:, n:].reshape(b * f, *x.shape[1:])

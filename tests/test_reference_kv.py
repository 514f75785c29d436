"""Reference K/V kept as two entries per layer plus a per-frame entry index: the same numbers as one copy per
frame, through the attention fallback and the whole denoiser, with no per-frame copy held by a clip."""
from __future__ import annotations

import pytest
import torch

from emo.checkpoints.model_dir import random_models
from emo.config import TINY
from emo.kernels.two_source_attention import two_source_attention_reference
from emo.models.reference_unet import ReferenceUNet
from emo.sampling.reference import reference_index
from emo.sampling.torch_model import denoise_halves, prepare_clip, prepare_video


def test_fallback_reads_each_rows_entry():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(5, 2, 7, 8, generator=g) for _ in range(3))
    k_ref, v_ref = (torch.randn(2, 2, 4, 8, generator=g) for _ in range(2))
    index = torch.tensor([1, 0, 1])  # the last 3 rows are cond rows
    got = two_source_attention_reference(q, k, v, k_ref, v_ref, index)
    for b in range(5):  # row by row, the keys built by hand
        keys, values = (k[b], v[b]) if b < 2 else (torch.cat([k[b], k_ref[index[b - 2]]], 1),
                                                  torch.cat([v[b], v_ref[index[b - 2]]], 1))
        want = torch.softmax(q[b] @ keys.mT / 8 ** 0.5, -1) @ values
        torch.testing.assert_close(got[b], want, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_clip():
    m = random_models()
    g = torch.Generator().manual_seed(1)
    size, f, n = 64, 5, 2
    masks = [torch.rand(3, (8 >> k) ** 2, generator=g) for k in range(4)]
    with torch.no_grad():
        video = prepare_video(m.net, m.vae, m.cfg, torch.rand(3, size, size, generator=g) * 2 - 1,
                              torch.randn(512, generator=g), torch.ones(3, size, size), masks, n)
        tokens = torch.randn(f, TINY.audioproj.context_tokens, TINY.audioproj.output_dim, generator=g)
        clip = prepare_clip(m.net, m.vae, m.cfg, video, torch.rand(n, 3, size, size, generator=g) * 2 - 1, tokens)
    return m, clip


def test_denoiser_through_the_index_equals_per_frame_copies(tiny_clip):
    m, clip = tiny_clip
    f = clip.audio_tokens.shape[1]
    assert clip.ref_index.tolist() == reference_index(f).tolist() == [1, 0, 1, 0, 1]  # (f + j) mod 2
    x = torch.randn(2, 4, f, 8, 8, generator=torch.Generator().manual_seed(2))
    t, scale = torch.tensor([500.0]), torch.tensor([1.0, 0.8, 1.2])
    with torch.no_grad():
        got = denoise_halves(m.net.denoising_unet, clip, x, t, scale)[0]
        per_frame = [(k.index_select(0, clip.ref_index), v.index_select(0, clip.ref_index))
                     for k, v in clip.video.ref_kv]  # the old layout: one entry copy per cond frame
        copies = type(clip)(type(clip.video)(clip.video.image_tokens, clip.video.face_feature, clip.video.masks,
                                             per_frame), clip.audio_tokens, clip.motion_features, torch.arange(f))
        want = denoise_halves(m.net.denoising_unet, copies, x, t, scale)[0]
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_clip_holds_no_per_frame_reference_copy(tiny_clip):
    _, clip = tiny_clip
    assert all(k.shape[0] == v.shape[0] == 2 for k, v in clip.video.ref_kv)  # the two entries, once per video
    video = clip.video.feed()
    own = {k: t for k, t in clip.feed().items() if k not in video}
    assert set(own) == {"audio_tokens", "motion_features", "ref_index"}


def test_unet_walk_refuses_modules_out_of_step_with_the_config():
    net = ReferenceUNet(TINY.unet)
    del net.down_blocks[-1]
    with pytest.raises(ValueError, match="zip"):
        net(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 64))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "CUDNN_ATTENTION"])
def test_fused_sdpa_takes_head_dim_40_as_it_is(backend, dtype):
    """SD1.5's first level has head dim 40: flash and cuDNN attention run it without our padding it to 64."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(4, 8, 1024, 40, generator=g).cuda() for _ in range(3))
    with sdpa_kernel([SDPBackend.MATH]):
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel([getattr(SDPBackend, backend)]):
        got = torch.nn.functional.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)

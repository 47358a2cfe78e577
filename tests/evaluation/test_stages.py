"""First stages of a run (issue 23): a latent model's autoencoder and a cascade's low-resolution
model resume after a kill exactly like the score model does, and a finished stage is read back from
its file instead of being trained again."""

from __future__ import annotations

import torch

import sde_gen as sg


def _digits():
    return sg.load_dataset("digits")


def _latent_stage(steps: int) -> sg.LatentStage:
    torch.manual_seed(0)  # the same initial weights for every stage
    ae = sg.AutoencoderKL(in_channels=1, image_size=8, latent_channels=2, channels=8, channel_mult=(1, 2))
    return sg.LatentStage(ae, steps=steps, batch_size=32, lr=3e-3, warmup=2, ckpt_every=2)


def _low_stage(steps: int) -> sg.LowResolutionStage:
    torch.manual_seed(0)
    net = sg.UNet(in_channels=1, image_size=4, channels=8, channel_mult=(1,), num_res_blocks=1,
                  attn_resolutions=(), dropout=0.0, time_embedding="fourier")  # fmt: skip
    return sg.LowResolutionStage(net, sg.DDIM(3), factor=2, steps=steps, batch_size=32, lr=1e-3, warmup=2,
                                 ckpt_every=2)  # fmt: skip


def _kill_after_step_4(run_dir, file: str, stage: str) -> int:
    """Remove what a kill right after step 4's checkpoint would not have left; return the time stamp
    of step 2's checkpoint, which a resumed stage leaves alone (a restarted one would rewrite it)."""
    (run_dir / file).unlink()
    (run_dir / stage / "checkpoints" / "ckpt_00000006.pt").unlink()
    assert (run_dir / stage / "checkpoints" / "ckpt_00000004.pt").exists()
    return (run_dir / stage / "checkpoints" / "ckpt_00000002.pt").stat().st_mtime_ns


def _state(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_killed_autoencoder_stage_resumes_exactly_and_a_finished_one_is_read_back(tmp_path):
    """Straight: 6 steps. Killed after the checkpoint of step 4 (its later checkpoint and its file
    removed, as if the kill came first), then started again: it resumes from step 4 and ends with the
    same weights and scale, bit for bit, and the same latents. A third call reads the file back."""
    data = _digits()
    straight = _latent_stage(6)
    lat_a, fig_a = straight.prepare(data, tmp_path / "a", seed=1)
    _latent_stage(6).prepare(data, tmp_path / "b", seed=1)
    stamp = _kill_after_step_4(tmp_path / "b", sg.LatentStage.FILE, "autoencoder")
    resumed = _latent_stage(6)
    lat_b, fig_b = resumed.prepare(data, tmp_path / "b", seed=1)
    assert (tmp_path / "b" / "autoencoder" / "checkpoints" / "ckpt_00000002.pt").stat().st_mtime_ns == stamp
    a, b = _state(straight.autoencoder), _state(resumed.autoencoder)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(lat_a, lat_b) and fig_a["latent_scale"] == fig_b["latent_scale"]
    again = _latent_stage(6)
    lat_c, fig_c = again.prepare(data, tmp_path / "b", seed=1)
    assert torch.equal(lat_c, lat_b) and fig_c["autoencoder_test_mse"] == fig_b["autoencoder_test_mse"]
    # Without a run directory nothing trains: zeros of the latents' shape, to build the objects.
    blank, figs = _latent_stage(6).prepare(data, None)
    assert blank.shape == (len(data.train), 2, 2, 4, 4) and not blank.any() and figs == {}


def test_a_latent_stage_draws_the_posterior_afresh_for_every_batch(tmp_path):
    """``latents="sample"`` (the default): ``prepare`` gives the scaled posterior means (the very
    latents of ``latents="mean"``, read back from the same file) and standard deviations, and the
    stage's transform draws ``u = mean + std z`` anew each time: over 4,000 draws the mean and std
    of each entry match the posterior's within their standard errors; the same generator state gives
    the same draw; through Batches the same example gets a new draw in the next epoch."""
    data = _digits()
    stage = _latent_stage(2)
    moments, _ = stage.prepare(data, tmp_path, seed=3)
    means, _ = sg.LatentStage(stage.autoencoder, steps=2, latents="mean").prepare(data, tmp_path, seed=3)
    assert sg.LatentStage(stage.autoencoder, latents="mean").transform is None
    assert moments.shape == (len(data.train), 2, *means.shape[1:])
    assert torch.equal(moments[:, 0], means) and bool((moments[:, 1] > 0).all())
    mean, std = moments[:8, 0], moments[:8, 1]
    draws = torch.stack([stage.transform(moments[:8], torch.Generator().manual_seed(i)) for i in range(4000)])
    n = draws.shape[0]
    assert bool(((draws.mean(0) - mean).abs() < 4.5 * std / n**0.5).all())
    assert bool(((draws.std(0) / std - 1).abs() < 4.5 * (2 / n) ** 0.5).all())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(stage.transform(moments[:8], g1), stage.transform(moments[:8], g2))
    batches = sg.Batches(moments[:16], batch_size=16, transform=stage.transform, seed=0)
    g = torch.Generator().manual_seed(0)
    first, second = batches.next(generator=g), batches.next(generator=g)
    assert first.shape == (16, *means.shape[1:])
    # Each epoch holds the same 16 examples (in another order): the sums differ by posterior noise.
    spread = (2 * moments[:16, 1].pow(2).sum(0)).sqrt()
    diff = first.sum(0) - second.sum(0)
    assert bool((diff.abs() < 5 * spread).all()) and bool((diff != 0).all())


def test_a_killed_low_resolution_stage_resumes_exactly(tmp_path):
    """The cascade's first stage, trained on the 4x4 pooled digits with the run's SDE and loss: 6
    steps straight, or killed after step 4 and started again, give the same EMA weights in the
    stage's file."""
    data, sde = _digits(), sg.VPSDE()
    run = dict(sde=sde, loss_fn=sg.DSMLoss(sde), parameterization="noise")
    _low_stage(6).prepare(data, tmp_path / "a", seed=2, **run)
    _low_stage(6).prepare(data, tmp_path / "b", seed=2, **run)
    stamp = _kill_after_step_4(tmp_path / "b", sg.LowResolutionStage.FILE, "low_resolution")
    stage = _low_stage(6)
    _, figs = stage.prepare(data, tmp_path / "b", seed=2, **run)
    assert (
        tmp_path / "b" / "low_resolution" / "checkpoints" / "ckpt_00000002.pt"
    ).stat().st_mtime_ns == stamp
    a = sg.load_model(tmp_path / "a" / sg.LowResolutionStage.FILE)
    b = sg.load_model(tmp_path / "b" / sg.LowResolutionStage.FILE)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.recipe["data"]["shape"] == [1, 4, 4] and "first_stage_seconds" in figs
    # What the super-resolution stage is given: the pooled samples plus the augmentation.
    cond, nfe = stage.condition(5, seed=3)
    assert cond["low"].shape == (5, 1, 4, 4) and torch.equal(cond["low_noise"], torch.full((5,), 0.2))
    assert nfe == 3 + 1  # DDIM(3) and the denoising step

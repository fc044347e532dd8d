from dataclasses import replace

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.manifest import ManifestRow
from model.network import EncoderDims
from model.training.data import MixConfig, TrainingPool
from model.training.losses import hinge_rank_loss, in_batch_hinge_loss
from model.training.train import TrainConfig, Trainer, train
from tests.support.synth import VOICES, backing, sing, write

pytestmark = pytest.mark.slow


def unit(*xs):
    return torch.tensor([list(x) for x in xs], dtype=torch.float32)


def test_hinge_rank_loss_hand_computed():
    a = unit([1, 0])
    p = unit([0.6, 0.8])  # s(a, p) = 0.6
    negs = torch.tensor(
        [[[1, 0], [0, 1], [-1, 0], [0.8, 0.6]]], dtype=torch.float32
    )  # s = 1, 0, -1, 0.8
    # sum_i max(0, 0.1 - 0.6 + s_i) = 0.5 + 0 + 0 + 0.3
    assert float(hinge_rank_loss(a, p, negs, 0.1)) == pytest.approx(0.8, abs=1e-6)
    # scale does not matter (cosine), and a perfect case costs nothing
    assert float(hinge_rank_loss(3 * a, 2 * p, 5 * negs, 0.1)) == pytest.approx(0.8, abs=1e-6)
    assert float(hinge_rank_loss(a, a, negs[:, 2:3], 0.1)) == 0.0


def test_in_batch_loss_uses_other_singers_only():
    a = unit([1, 0], [0, 1], [1, 0])
    p = unit([1, 0], [0.6, 0.8], [0.8, 0.6])
    labels = torch.tensor([0, 1, 0])  # rows 0 and 2 share a singer: never each other's negatives
    # anchor 0: s_pos 1, negatives {p1: 0.6} -> max(0, .1 - 1 + .6) = 0
    # anchor 1: s_pos .8, negatives {p0: 0, p2: .6} -> 0 + 0 (0.1 - .8 + .6 < 0)
    # anchor 2: s_pos .8, negatives {p1: .6} -> 0
    assert float(in_batch_hinge_loss(a, p, labels, 0.1, n_hardest=4)) == 0.0
    # a margin of 0.5 makes: anchor0 0.1, anchor1 0.3, anchor2 0.3 -> mean 0.2333
    assert float(in_batch_hinge_loss(a, p, labels, 0.5, n_hardest=4)) == pytest.approx(
        0.7 / 3, abs=1e-6
    )
    # n_hardest=1 keeps only the hardest negative: anchor 1 loses its p0 term (0.5 - .8 + 0 < 0)
    assert float(in_batch_hinge_loss(a, p, labels, 0.5, n_hardest=1)) == pytest.approx(
        0.7 / 3, abs=1e-6
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    rows = []
    for s, voice in enumerate(VOICES[:3]):
        for take in range(2):
            vocal = write(d / f"v{s}{take}.flac", sing(voice, 4.0, seed=10 * s + take))
            acc = write(d / f"a{s}{take}.flac", backing(4.0, seed=s))
            rows.append(
                ManifestRow(singer=f"singer{s}", path=str(vocal), domain="mono", song=f"song{take}")
            )
            rows.append(
                ManifestRow(
                    singer=f"singer{s}",
                    vocal_path=str(vocal),
                    accompaniment_path=str(acc),
                    domain="mixed",
                    song=f"song{take}",
                )
            )
    bg = write(d / "bg.flac", backing(6.0, seed=9))
    return rows, [str(bg)]


def tiny_config(model_type, **kw):
    return TrainConfig(
        model_type=model_type,
        batch_size=3,
        lr=3e-3,
        pretrain_epochs=1,
        epochs=1,
        steps_per_epoch=2,
        dims=EncoderDims(channels=16, embed_dim=32),
        **kw,
    )


def test_pool_pairs_vocals_with_their_accompaniment(tiny_data):
    rows, bgs = tiny_data
    pool = TrainingPool(TrainConfig().features, speeds=(0.9, 1.0)).load(rows, bgs)
    assert pool.singers == ["singer0", "singer1", "singer2"] and pool.n_classes == 6
    assert all(len(recs) == 2 and recs[0].accompaniment is not None for recs in pool.mono)
    rng = np.random.default_rng(0)
    mono, mixed = pool.sample_mono(np.arange(6), rng), pool.sample_mixed(np.arange(6), rng)
    assert mono.shape == mixed.shape == (6, pool.cfg.min_samples)


@pytest.mark.parametrize("model_type", ["cross", "mono", "mixed"])
def test_one_step_reduces_the_loss(tiny_data, tmp_path, model_type):
    rows, bgs = tiny_data
    cfg = tiny_config(model_type, mix=MixConfig(gain_db=(0.0, 0.0)))
    cfg.lr = 1e-3
    pool = TrainingPool(cfg.features, cfg.speeds, cfg.mix).load(rows, bgs)
    trainer = Trainer(cfg, pool, None, [], tmp_path)
    trainer.set_normalization(n=16)
    trainer.net.train()

    def loss_on_fixed_batch():  # same crops, same dropout masks
        torch.manual_seed(0)
        return loss_fn(pool, np.random.default_rng(7), augment=False)

    for loss_fn in (trainer.classification_loss, trainer.metric_loss):
        before = float(loss_on_fixed_batch().detach())
        loss = loss_on_fixed_batch()
        trainer.opt.zero_grad()
        loss.backward()
        trainer.opt.step()
        after = float(loss_on_fixed_batch().detach())
        assert after < before, (loss_fn.__name__, before, after)


def test_training_run_checkpoint_and_resume(tiny_data, tmp_path):
    rows, bgs = tiny_data
    cfg = tiny_config("cross", speeds=(1.0, 1.1), negatives="in-batch", spec_augment=True)
    val = [r for r in rows if r.singer != "singer2"]
    result = train(cfg, rows, val, bgs, tmp_path / "run")
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert {"val_loss", "val_mono2mix", "val_mean"} <= set(result["history"][-1])
    net, _feats, meta = load_checkpoint(result["best_checkpoint"])
    assert net.model_type == "cross" and net.dims.embed_dim == 32
    assert TrainConfig.from_dict(meta["train_config"]) == cfg  # the recipe travels with the weights
    assert float(net.norm_std[1]) != 1.0  # statistics computed from the training data
    # resuming a finished run trains nothing more; more epochs continue from the state
    again = train(cfg, rows, val, bgs, tmp_path / "run")
    assert len(again["history"]) == 2
    longer = TrainConfig.from_dict(cfg.to_dict() | {"epochs": 2})
    with pytest.raises(ValueError, match="another configuration"):
        train(longer, rows, val, bgs, tmp_path / "run")


def test_cosine_schedule_and_snapshots(tiny_data, tmp_path):
    rows, bgs = tiny_data
    cfg = replace(tiny_config("cross", lr_schedule="cosine", snapshot_every=1), epochs=2)
    pool = TrainingPool(cfg.features, cfg.speeds, cfg.mix).load(rows, bgs)
    trainer = Trainer(cfg, pool, None, [], tmp_path / "run")
    lrs = []
    for epoch, step in [(0, 0), (0, 1), (1, 0), (1, 1)]:  # 4 metric steps
        trainer._set_lr(epoch, step)
        lrs.append(trainer.opt.param_groups[0]["lr"])
    expected = [cfg.lr * 0.5 * (1 + np.cos(np.pi * t / 4)) for t in range(4)]
    assert lrs == pytest.approx(expected) and lrs[0] == cfg.lr
    trainer.set_normalization(n=16)
    trainer.run()
    # pre-training epoch 1, metric epochs 2-3: a snapshot per epoch, the last equal to last.pt
    names = sorted(p.name for p in (tmp_path / "run").glob("epoch-*.pt"))
    assert names == ["epoch-001.pt", "epoch-002.pt", "epoch-003.pt"]
    last, snap = (
        torch.load(tmp_path / "run" / n, weights_only=True) for n in ("last.pt", names[-1])
    )
    assert all(torch.equal(last["state_dict"][k], v) for k, v in snap["state_dict"].items())
    with pytest.raises(ValueError, match="lr_schedule"):
        Trainer(tiny_config("cross", lr_schedule="step"), pool, None, [], tmp_path / "x").run()

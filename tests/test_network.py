import pickle

import pytest
import torch

from model.checkpoint import checkpoint_id, load_checkpoint, make_random_checkpoint, save_checkpoint
from model.errors import CheckpointError
from model.features import FeatureConfig
from model.network import Encoder, EncoderDims, SingerNet


def test_encoder_shapes():
    enc = Encoder().eval()
    assert enc(torch.randn(5, 128, 129)).shape == (5, 256)
    assert enc.layers[:-4](torch.randn(2, 128, 129)).shape == (2, 128, 1)  # 129-43-14-4-1
    assert (
        sum(p.numel() for p in enc.parameters()) == 231_680
    )  # 4x(128*128*3+128) + 128*256+256 + BN


def test_cross_has_two_encoders_shared_models_one():
    cross, mono = SingerNet("cross"), SingerNet("mono")
    assert cross.mono is not cross.mixed and mono.mono is mono.mixed
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(cross) == 2 * n(mono)
    with pytest.raises(ValueError):
        cross(torch.randn(1, 128, 129), "vocals")


def test_standardisation_is_per_domain():
    net = SingerNet("mono").eval()
    net.set_normalization("mono", 0.5, 2.0)
    x = torch.rand(3, 128, 129)
    with torch.no_grad():
        torch.testing.assert_close(net(x, "mono"), net.branch("mono")((x - 0.5) / 2.0))
        torch.testing.assert_close(net(x, "mixed"), net.branch("mixed")(x))


def test_checkpoint_round_trip(tmp_path):
    dims = EncoderDims(channels=32, embed_dim=64)
    net = SingerNet("cross", dims).eval()
    net.set_normalization("mixed", 0.2, 0.3)
    feats = FeatureConfig(vad_top_db=30.0)
    path = save_checkpoint(net, tmp_path / "m.pt", feats, {"seed": 3})
    loaded, f2, meta = load_checkpoint(path)
    assert loaded.dims == dims and f2 == feats and meta == {"seed": 3}
    x = torch.rand(2, 128, 129)
    with torch.no_grad():
        for d in ("mono", "mixed"):
            torch.testing.assert_close(loaded(x, d), net(x, d))
    assert checkpoint_id(path) == checkpoint_id(path) and len(checkpoint_id(path)) == 16


def test_bad_checkpoints_raise_typed_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    # A pickle of an arbitrary object is refused: checkpoints load with weights_only=True.
    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": "singer-retrieval", "obj": pickle.loads(pickle.dumps(EncoderDims()))}, evil
    )
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"format": "something-else"}, plain)
    with pytest.raises(CheckpointError, match="import-keras"):
        load_checkpoint(plain)


def test_random_checkpoint_is_deterministic(tmp_path):
    a = load_checkpoint(make_random_checkpoint(tmp_path / "a.pt", seed=1))[0]
    b = load_checkpoint(make_random_checkpoint(tmp_path / "b.pt", seed=1))[0]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k

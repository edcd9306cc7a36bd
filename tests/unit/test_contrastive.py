"""The contrastive evaluator: loss, learning on a toy set, deterministic training, save/load,
retrieval and captioning invariants. MiniLM is replaced by a fixed hash embedding here (the text
tower is locked, so the image side's code paths are the same) to keep the file fast."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch

from blinkgen.eval import contrastive as C
from blinkgen.models.clip import CLIP_PRESETS, ContrastiveModel, contrastive_loss


def fake_encode(texts, batch_size: int = 128) -> torch.Tensor:
    """A deterministic unit vector per text (stands in for MiniLM's pooled embedding)."""
    rows = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        rows.append(torch.randn(384, generator=torch.Generator().manual_seed(seed)))
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(C, "encode_pooled", fake_encode)
    C._LOADED.clear()


def _toy_images(n: int = 8) -> torch.Tensor:
    """n 64x64 images, each a different colour block in a different place."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 3, 64, 64), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = (i // 4) * 32, (i % 4) * 16
        x[i, :, r:r + 32, c:c + 16] = torch.randint(0, 200, (3, 1, 1), generator=g, dtype=torch.uint8)
    return x


def test_loss_is_log_n_for_uninformative_logits_and_symmetric():
    logits = torch.zeros(6, 6)
    assert contrastive_loss(logits).item() == pytest.approx(math.log(6))
    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    assert contrastive_loss(a).item() == pytest.approx(contrastive_loss(a.T).item())


def test_duplicate_captions_are_positives_not_negatives():
    ids = torch.tensor([0, 0, 1])
    # images 0 and 1 share a caption and score both copies equally: optimal when duplicates are
    # positives (no gradient), while identity targets would push the two copies apart
    grads = []
    for caption_ids in (ids, None):
        logits = torch.tensor([[9.0, 9.0, -9.0], [9.0, 9.0, -9.0], [-9.0, -9.0, 9.0]], requires_grad=True)
        contrastive_loss(logits, caption_ids).backward()
        grads.append(logits.grad.abs().max().item())
    assert grads[0] < 1e-6 < 0.1 < grads[1]


def test_loss_decreases_on_a_toy_set():
    torch.manual_seed(0)
    model = ContrastiveModel(CLIP_PRESETS["tiny"])
    x, t = _toy_images(), fake_encode([f"caption {i}" for i in range(8)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = contrastive_loss(model.logits(x, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert C.retrieval_at_k(model.image(x), t, list(range(8)), 1) == 1.0


def test_embeddings_ignore_batch_mates():
    model = ContrastiveModel(CLIP_PRESETS["tiny"]).eval()
    x = _toy_images()
    with torch.no_grad():
        assert torch.allclose(model.image(x)[2:3], model.image(x[2:3]), atol=1e-6)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ContrastiveModel(CLIP_PRESETS["tiny"]).eval()
    caps = ["a red circle", "grinning face", "two blue squares"]
    C.save_evaluator(tmp_path / "ev", model, {"note": "test"}, caps, dtype=torch.float32)
    ev = C.load_evaluator(tmp_path / "ev")
    x = _toy_images()
    with torch.no_grad():
        assert torch.equal(ev.embed_images(x), model.image(x))
    assert C.read_captions(tmp_path / "ev") == caps
    assert ev.config["note"] == "test" and ev.config["family"] == "contrastive"
    shipped = C.candidate_embeddings(ev, caps)  # the int8 copy: same ranking, tiny error
    assert (shipped - fake_encode(caps)).abs().max() < 2e-3


def test_fp16_save_is_close(tmp_path):
    model = ContrastiveModel(CLIP_PRESETS["tiny"]).eval()
    C.save_evaluator(tmp_path / "ev", model, {})
    ev = C.load_evaluator(tmp_path / "ev")
    with torch.no_grad():
        assert (ev.embed_images(_toy_images()) - model.image(_toy_images())).abs().max() < 1e-2


def test_training_is_deterministic_and_keeps_held_out_images_out(tmp_path):
    from blinkgen.data.registry import load_dataset

    data = load_dataset("shapes:30", 64, 0)
    cfg = C.LiTConfig(data="shapes:30", preset="tiny", steps=3, batch_size=8, warmup=1)
    a = C.train_lit(cfg, tmp_path / "a", data=data, progress=lambda m: None)
    b = C.train_lit(cfg, tmp_path / "b", data=data, progress=lambda m: None)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    held = C.held_out_split(data, 0)[1]
    assert cfg_train_images(a) == len(data) - len(held)


def cfg_train_images(folder) -> int:
    return C.load_evaluator(folder).config["training"]["train_images"]


def test_retrieval_counts_ties_against():
    img = torch.ones(3, 4)
    txt = torch.eye(3, 4)
    assert C.retrieval_at_k(img, txt, [0, 1, 2], 1) == 0.0


def test_caption_ranks_the_matching_candidate_first(tmp_path):
    from PIL import Image

    from blinkgen.eval.caption import caption

    torch.manual_seed(0)
    model = ContrastiveModel(CLIP_PRESETS["tiny"])
    x, caps = _toy_images(4), ["red block", "green block", "blue block", "black block"]
    t = fake_encode(caps)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = contrastive_loss(model.logits(x, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
    C.save_evaluator(tmp_path / "ev", model.eval(), {}, caps, dtype=torch.float32)
    im = Image.fromarray(x[2].permute(1, 2, 0).numpy())
    top = caption(im, top_k=2, evaluator=tmp_path / "ev")
    assert top[0][0] == "blue block" and len(top) == 2 and top[0][1] >= top[1][1]
    again = caption(im, candidates=["blue block", "red block"], top_k=5, evaluator=tmp_path / "ev")
    assert [c for c, _ in again][0] == "blue block" and len(again) == 2


def test_shipped_evaluator_is_complete_small_and_documented():
    folder = C.EVALUATOR_DIR
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 6.5 * 2 ** 20
    ev = C.load_evaluator()
    caps = C.read_captions(folder)
    assert ev.config["captions_sha256"] == C.texts_sha(caps) and len(caps) > 1000
    r = ev.config["held_out_retrieval"]
    assert r["image_to_text_R@1"] > 10 * r["chance_R@1"]  # it learned something real
    assert str(r["image_to_text_R@1"] * 100)[:2] in (folder / "README.md").read_text()
    tr = ev.config["training"]
    assert tr["train_images"] + r["n_images"] < 10572  # the held-out images stayed out
    emb = ev.embed_images(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert emb.shape == (2, 384) and torch.isfinite(emb).all()

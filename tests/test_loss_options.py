"""Issue 13 item 4: the class options of the anchor-free loss, and options refused for the other family."""

from __future__ import annotations

import pytest
import torch

from accelyolo.core.config import ConfigError, load_config
from accelyolo.families import build_loss, build_model, get_family
from accelyolo.losses import AnchorFreeLoss
from tests.conftest import TINY_ANCHOR_BASED, TINY_ANCHOR_FREE

pytestmark = pytest.mark.usefixtures("one_thread")


def _items(**options) -> torch.Tensor:
    """(box, cls, dfl) of one fixed batch through a fixed yolov8t, with these loss options."""
    torch.manual_seed(0)
    model = build_model(TINY_ANCHOR_FREE, nc=3).train()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.4], [0, 2, 0.3, 0.3, 0.2, 0.3], [1, 1, 0.6, 0.4, 0.4, 0.5]])
    loss_fn = build_loss(model, imgsz=64, **options)
    _, items = loss_fn(model(images), targets)
    return items


def test_class_options_change_only_the_class_term_of_the_anchor_free_loss():
    plain = _items()
    assert torch.equal(_items(label_smoothing=0.0, fl_gamma=0.0, cls_pw=1.0), plain)  # neutral values
    for options in ({"label_smoothing": 0.2}, {"fl_gamma": 1.5}, {"cls_pw": 3.0}):
        changed = _items(**options)
        assert torch.equal(changed[[0, 2]], plain[[0, 2]]), options  # box and dfl untouched
        assert changed[1] != plain[1], options
    # focal modulation only shrinks each element (alpha_t <= 0.75, (1 - p_t)^gamma <= 1)
    assert _items(fl_gamma=1.5)[1] < 0.75 * plain[1]
    # a larger positive weight weighs the positive targets more
    assert _items(cls_pw=3.0)[1] > plain[1]


def test_tal_min_side_reaches_the_assigner_from_the_config():
    cfg = load_config(model=TINY_ANCHOR_FREE, tal_min_side=12.0)
    assert build_loss(build_model(TINY_ANCHOR_FREE, nc=3), **cfg.hyp()).assigner.min_side == 12.0
    with pytest.raises(ConfigError, match="'tal_min_side' must be >= 0"):
        load_config(model=TINY_ANCHOR_FREE, tal_min_side=-1.0)


def test_class_loss_matches_the_formulas_element_by_element():
    gains = get_family("anchor_free").loss_gains
    head = build_model(TINY_ANCHOR_FREE, nc=2).head
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.3]]])  # (B=1, N=2, nc=2)
    scores = torch.tensor([[[0.8, 0.0], [0.0, 0.0]]])  # anchor 0 holds an object of class 0
    fg = torch.tensor([[True, False]])
    p = logits.sigmoid()

    def bce(t, pw=1.0):
        return -(pw * t * p.log() + (1 - t) * (1 - p).log())

    eps = 0.1
    smoothed = torch.tensor([[[0.8 * (1 - eps) + eps / 2, eps / 2], [0.0, 0.0]]])  # background anchor stays 0
    got = AnchorFreeLoss(head, **gains, label_smoothing=eps).class_loss(logits, scores, fg)
    assert got.item() == pytest.approx(bce(smoothed).sum().item(), rel=1e-5)

    got = AnchorFreeLoss(head, **gains, cls_pw=2.5).class_loss(logits, scores, fg)
    assert got.item() == pytest.approx(bce(scores, 2.5).sum().item(), rel=1e-5)

    gamma = 2.0
    p_t = scores * p + (1 - scores) * (1 - p)
    alpha_t = scores * 0.25 + (1 - scores) * 0.75
    expected = (bce(scores) * alpha_t * (1 - p_t) ** gamma).sum()
    got = AnchorFreeLoss(head, **gains, fl_gamma=gamma).class_loss(logits, scores, fg)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("model", "key", "value", "family"),
    [
        (TINY_ANCHOR_FREE, "obj", 0.7, "anchor_based"),
        (TINY_ANCHOR_FREE, "obj_pw", 2.0, "anchor_based"),
        (TINY_ANCHOR_FREE, "anchor_t", 3.0, "anchor_based"),
        (TINY_ANCHOR_BASED, "dfl", 1.0, "anchor_free"),
        (TINY_ANCHOR_BASED, "tal_min_side", 8.0, "anchor_free"),
    ],
)
def test_an_option_of_the_other_family_is_refused_naming_key_and_family(model, key, value, family):
    cfg = load_config(model=model, **{key: value})
    own = get_family("anchor_based" if family == "anchor_free" else "anchor_free")
    with pytest.raises(ConfigError, match=rf"'{key}' = {value} applies only to {family} models"):
        own.check_options(cfg.hyp())
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_loss(build_model(model, nc=2), **cfg.hyp())


@pytest.mark.parametrize("model", [TINY_ANCHOR_FREE, TINY_ANCHOR_BASED])
def test_defaults_of_the_other_family_stay_silent(model, caplog):
    cfg = load_config(model=model)
    with caplog.at_level("WARNING", logger="accelyolo"):
        build_loss(build_model(model, nc=2), **cfg.hyp())
    assert not caplog.records


def test_fit_refuses_the_other_familys_option_before_making_a_run_folder(tiny_demo, tmp_path):
    from accelyolo.commands.fit import fit
    from tests.conftest import tiny_train_options

    with pytest.raises(ConfigError, match="'obj_pw' = 2.0 applies only to anchor_based"):
        fit(**tiny_train_options(tiny_demo, tmp_path, obj_pw=2.0))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())

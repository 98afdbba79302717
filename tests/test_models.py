"""Model zoo: exact parameter counts from the paper, shapes, errors, spec round trips.

Parameter counts are written here independently as sums of per-layer terms
(weights + biases + BatchNorm scale/shift), not read back from the implementation.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.func import functional_call, grad, vmap

from landscape.errors import LandscapeError, ShapeError
from landscape.models import (
    build_model,
    count_parameters,
    describe,
    layer_slices,
    model_info,
    model_names,
    model_spec,
)

ALL_MODELS = [
    "all-cnn-bn",
    "char-lstm",
    "lenet",
    "lstm-lm",
    "mnistfc",
    "small-lenet",
    "small-mnistfc",
]

# Small but complete configurations of every model, used for shapes and round trips.
SMALL_CONFIGS = {
    "small-mnistfc": ((1, 28, 28), 10, {}),
    "mnistfc": ((1, 28, 28), 10, {"hidden": 32}),
    "small-lenet": ((1, 28, 28), 10, {}),
    "lenet": ((1, 28, 28), 10, {}),
    "all-cnn-bn": ((3, 32, 32), 10, {"width1": 8, "width2": 12}),
    "char-lstm": ((7,), 96, {}),
    "lstm-lm": ((7,), 50, {"hidden": 16, "layers": 2}),
}


def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def batchnorm(channels: int) -> int:
    return 2 * channels


def lstm_layer(fan_in: int, hidden: int) -> int:
    # four gates, input and recurrent weights, two bias vectors (PyTorch's b_ih and b_hh)
    return 4 * hidden * (fan_in + hidden) + 2 * 4 * hidden


def lstm_lm_count(vocab: int, hidden: int, layers: int) -> int:
    return vocab * hidden + layers * lstm_layer(hidden, hidden) + linear(hidden, vocab)


def example_input(name: str, input_shape: tuple[int, ...], num_classes: int, batch: int = 3):
    gen = torch.Generator().manual_seed(0)
    if model_info(name).task == "sequence":
        return torch.randint(0, num_classes, (batch, *input_shape), generator=gen)
    return torch.randn(batch, *input_shape, generator=gen)


# --- exact parameter counts (paper Sec. 5.1-5.4) ------------------------------------


def test_paper_counts_of_the_hessian_networks():
    assert linear(784, 64) + linear(64, 10) == 50_890
    assert count_parameters(build_model("small-mnistfc", (1, 28, 28), 10)) == 50_890

    small_lenet = conv(1, 10, 5) + conv(10, 20, 5) + linear(320, 128) + linear(128, 10)
    assert small_lenet == 47_658
    assert count_parameters(build_model("small-lenet", (1, 28, 28), 10)) == 47_658

    char_lstm = lstm_layer(96, 48) + linear(48, 96, bias=False)
    assert char_lstm == 32_640
    assert count_parameters(build_model("char-lstm", (32,), 96)) == 32_640


def test_small_mnistfc_hidden_32_is_what_the_text_says_but_not_the_count():
    model = build_model("small-mnistfc", (1, 28, 28), 10, hidden=32)
    assert count_parameters(model) == linear(784, 32) + linear(32, 10) == 25_450


def test_small_mnistfc_on_8x8_digits():
    model = build_model("small-mnistfc", (1, 8, 8), 10)
    assert count_parameters(model) == 8 * 8 * 64 + 64 + 64 * 10 + 10
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_all_cnn_bn_count_reference_head():
    c1, c2 = 96, 192
    expected = (
        conv(3, c1, 3) + batchnorm(c1)
        + 2 * (conv(c1, c1, 3) + batchnorm(c1))
        + conv(c1, c2, 3) + batchnorm(c2)
        + 2 * (conv(c2, c2, 3) + batchnorm(c2))
        + 2 * (conv(c2, c2, 3) + batchnorm(c2))  # reference head: two padded 3x3 convs
        + conv(c2, 10, 1) + batchnorm(10)
    )
    assert expected == 1_667_166
    assert count_parameters(build_model("all-cnn-bn", (3, 32, 32), 10)) == expected


def test_all_cnn_bn_count_springenberg_head():
    c1, c2 = 96, 192
    expected = (
        conv(3, c1, 3) + batchnorm(c1)
        + 2 * (conv(c1, c1, 3) + batchnorm(c1))
        + conv(c1, c2, 3) + batchnorm(c2)
        + 2 * (conv(c2, c2, 3) + batchnorm(c2))
        + conv(c2, c2, 3) + batchnorm(c2)  # valid 3x3
        + conv(c2, c2, 1) + batchnorm(c2)  # 1x1
        + conv(c2, 10, 1) + batchnorm(10)
    )
    assert expected == 1_372_254
    model = build_model("all-cnn-bn", (3, 32, 32), 10, head="springenberg")
    assert count_parameters(model) == expected
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mnistfc_and_lenet_counts():
    mnistfc = (
        linear(784, 1024) + batchnorm(1024) + linear(1024, 1024) + batchnorm(1024)
        + linear(1024, 10)
    )
    assert count_parameters(build_model("mnistfc", (1, 28, 28), 10)) == mnistfc == 1_867_786
    lua_mnistfc = linear(784, 1024) + linear(1024, 1024) + linear(1024, 10)
    plain = build_model("mnistfc", (1, 28, 28), 10, batch_norm=False, input_dropout=0.0)
    assert count_parameters(plain) == lua_mnistfc

    lenet = (
        conv(1, 20, 5) + batchnorm(20) + conv(20, 50, 5) + batchnorm(50)
        + linear(50 * 2 * 2, 500) + batchnorm(500) + linear(500, 10)
    )
    assert count_parameters(build_model("lenet", (1, 28, 28), 10)) == lenet == 132_220


def test_war_and_peace_char_lstm_count():
    model = build_model("char-lstm", (50,), 87, variant="war-and-peace")
    expected = lstm_layer(87, 128) + lstm_layer(128, 128) + linear(128, 87, bias=False)
    assert count_parameters(model) == expected
    # explicit options override the preset
    model = build_model("char-lstm", (50,), 87, variant="war-and-peace", layers=1)
    assert count_parameters(model) == lstm_layer(87, 128) + linear(128, 87, bias=False)


def test_lstm_lm_count_formula_and_init_range():
    # The 66M default is not built here; the same formula is checked on a small build.
    assert lstm_lm_count(10_000, 1500, 2) == 66_034_000
    model = build_model("lstm-lm", (35,), 50, hidden=16, layers=3, init_range=0.1)
    assert count_parameters(model) == lstm_lm_count(50, 16, 3)
    for p in model.parameters():
        assert p.abs().max() <= 0.1
    assert model_spec(model)["kwargs"]["dropout"] == 0.65  # Zaremba "large" default


def test_count_parameters_counts_only_trainable():
    model = build_model("small-lenet", (1, 28, 28), 10)
    model.conv1.weight.requires_grad_(False)
    assert count_parameters(model) == 47_658 - 10 * 25


# --- forward shapes --------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shapes(name):
    shape, classes, options = SMALL_CONFIGS[name]
    model = build_model(name, shape, classes, seed=0, **options).eval()
    x = example_input(name, shape, classes)
    out = model(x)
    if model_info(name).task == "sequence":
        assert out.shape == (3, shape[0], classes)
    else:
        assert out.shape == (3, classes)
    assert torch.isfinite(out).all()


def test_registry_lists_every_model():
    assert model_names() == sorted(ALL_MODELS)
    assert {model_info(n).task for n in ALL_MODELS} == {"classification", "sequence"}


def test_all_cnn_bn_default_forward_on_cifar_shape():
    model = build_model("all-cnn-bn", (3, 32, 32), 10, seed=0).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["char-lstm", "lstm-lm"])
def test_language_models_are_causal_and_stateless(name):
    shape, classes, options = SMALL_CONFIGS[name]
    model = build_model(name, shape, classes, seed=0, **options).eval()
    tokens = example_input(name, shape, classes)
    changed = tokens.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % classes
    out, out_changed = model(tokens), model(changed)
    # logits up to step 3 see only tokens 0..3; later ones must change
    torch.testing.assert_close(out[:, :4], out_changed[:, :4], rtol=0, atol=0)
    assert not torch.allclose(out[:, 4:], out_changed[:, 4:])
    # no hidden state is carried from one call to the next
    torch.testing.assert_close(model(tokens), out, rtol=0, atol=0)
    # windows of another length run too (input_shape only fixes the training window)
    assert model(tokens[:, :3]).shape == (3, 3, classes)


def test_char_lstm_per_sample_gradients_under_vmap_match_a_loop():
    model = build_model("char-lstm", (5,), 6, seed=0, hidden=4, layers=2).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    tokens = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(1))

    def loss(p, row):
        logits = functional_call(model, p, (row.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 6), row.roll(-1))

    batched = vmap(grad(loss), in_dims=(None, 0))(params, tokens)
    for i in range(3):
        single = torch.autograd.grad(loss(dict(model.named_parameters()), tokens[i]),
                                     list(model.parameters()))
        for (name, _), g in zip(model.named_parameters(), single):
            torch.testing.assert_close(batched[name][i], g)


def test_mlps_flatten_from_the_input_shape_so_unbatched_samples_work():
    model = build_model("small-mnistfc", (1, 8, 8), 10, seed=0)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x[2]), model(x)[2])


# --- errors ----------------------------------------------------------------------


def _one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "\n" not in message


def test_small_lenet_rejects_8x8_digits():
    with pytest.raises(ShapeError) as info:
        build_model("small-lenet", (1, 8, 8), 10)
    message = str(info.value)
    assert "28x28" in message and "(1, 8, 8)" in message
    assert _one_sentence(message)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("lenet", (1, 32, 32)),
        ("lenet", (28, 28)),
        ("char-lstm", (1, 28, 28)),
        ("lstm-lm", (35, 1)),
        ("all-cnn-bn", (32, 32)),
        ("small-mnistfc", (0, 8)),
        ("small-mnistfc", ()),
    ],
)
def test_shape_errors(name, shape):
    with pytest.raises(ShapeError) as info:
        build_model(name, shape, 10)
    assert _one_sentence(str(info.value))


def test_springenberg_head_needs_a_3x3_grid():
    build_model("all-cnn-bn", (3, 9, 9), 10, head="springenberg", width1=2, width2=2)
    with pytest.raises(ShapeError):
        build_model("all-cnn-bn", (3, 8, 8), 10, head="springenberg", width1=2, width2=2)


def test_unknown_model_lists_valid_names():
    with pytest.raises(LandscapeError) as info:
        build_model("resnet", (3, 32, 32), 10)
    message = str(info.value)
    assert all(name in message for name in ALL_MODELS)
    assert _one_sentence(message)


def test_unknown_option_names_valid_options():
    with pytest.raises(LandscapeError) as info:
        build_model("mnistfc", (1, 28, 28), 10, hiden=3)
    message = str(info.value)
    for option in ("hiden", "hidden", "dropout", "input_dropout", "batch_norm"):
        assert option in message
    with pytest.raises(LandscapeError, match="takes no options"):
        build_model("small-lenet", (1, 28, 28), 10, dropout=0.5)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lenet", {"dropout": 1.0}),
        ("mnistfc", {"hidden": 0}),
        ("mnistfc", {"batch_norm": 1}),
        ("char-lstm", {"variant": "tolstoy"}),
        ("lstm-lm", {"init_range": -0.1}),
        ("all-cnn-bn", {"head": "vgg"}),
    ],
)
def test_bad_option_values(name, options):
    shape, classes, _ = SMALL_CONFIGS[name]
    with pytest.raises(LandscapeError) as info:
        build_model(name, shape, classes, **options)
    assert _one_sentence(str(info.value))


def test_bad_num_classes_and_conflicting_options():
    with pytest.raises(LandscapeError):
        build_model("small-mnistfc", (1, 8, 8), 0)
    with pytest.raises(LandscapeError, match="twice"):
        build_model("small-mnistfc", (1, 8, 8), 10, kwargs={"hidden": 8}, hidden=9)


def test_token_models_reject_float_input():
    model = build_model("char-lstm", (5,), 10)
    with pytest.raises(ShapeError):
        model(torch.randn(2, 5))


# --- spec round trip and seeding -------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_spec_round_trip(name):
    shape, classes, options = SMALL_CONFIGS[name]
    model = build_model(name, shape, classes, seed=3, **options).eval()
    spec = model_spec(model)
    assert set(spec) == {"name", "input_shape", "num_classes", "kwargs"}
    assert set(spec["kwargs"]) == set(model_info(name).options)
    spec = json.loads(json.dumps(spec))  # checkpoints store it as JSON-able data

    rebuilt = build_model(**spec).eval()
    assert [(n, s) for n, s, _ in describe(rebuilt)] == [(n, s) for n, s, _ in describe(model)]
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = example_input(name, shape, classes)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert model_spec(rebuilt) == spec


def test_model_spec_needs_build_model():
    with pytest.raises(LandscapeError):
        model_spec(torch.nn.Linear(2, 2))


def test_spec_is_a_copy():
    model = build_model("small-mnistfc", (1, 8, 8), 10)
    model_spec(model)["kwargs"]["hidden"] = 1
    assert model_spec(model)["kwargs"]["hidden"] == 64


def test_seeded_builds_are_reproducible_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("small-lenet", (1, 28, 28), 10, seed=7)
    b = build_model("small-lenet", (1, 28, 28), 10, seed=7)
    c = build_model("small-lenet", (1, 28, 28), 10, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    for (_, pa), (_, pb), (_, pc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters()
    ):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)

    torch.manual_seed(11)
    d = build_model("lstm-lm", (5,), 20, hidden=8)
    torch.manual_seed(11)
    e = build_model("lstm-lm", (5,), 20, hidden=8)
    for pd, pe in zip(d.parameters(), e.parameters()):
        assert torch.equal(pd, pe)


# --- summaries -------------------------------------------------------------------


def test_describe_and_layer_slices():
    model = build_model("small-lenet", (1, 28, 28), 10)
    rows = describe(model)
    assert rows[0] == ("conv1.weight", (10, 1, 5, 5), 250)
    assert sum(n for _, _, n in rows) == 47_658

    slices = layer_slices(model)
    assert [name for name, _ in slices] == ["conv1", "conv2", "fc1", "fc2"]
    assert slices[0][1] == slice(0, 260)
    assert slices[-1][1] == slice(47_658 - 1290, 47_658)
    for (_, left), (_, right) in zip(slices, slices[1:]):
        assert left.stop == right.start

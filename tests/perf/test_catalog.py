"""Catalog cards: derived parameter counts against published totals, ids, precisions."""
import pytest

from sim.perf import catalog
from sim.core.errors import UserError

# (id, published total B, published active B, relative tolerance); sources in models/llms.csv
PUBLISHED = [
    ("mixtral-8x7b", 46.7, 12.9, 0.005),
    ("mixtral-8x22b", 141.0, 39.0, 0.01),
    ("mistral-7b", 7.3, 7.3, 0.01),
    ("llama-3-8b", 8.0, 8.0, 0.01),
    ("llama-3-70b", 70.6, 70.6, 0.005),
    ("llama-2-7b", 6.74, 6.74, 0.005),
    ("llama-2-13b", 13.0, 13.0, 0.005),
    ("llama-2-70b", 69.0, 69.0, 0.005),
    ("mistral-large-2", 123.0, 123.0, 0.01),
    ("codestral-22b", 22.2, 22.2, 0.01),
    ("mistral-small-24b", 24.0, 24.0, 0.02),
    ("codellama-34b", 33.7, 33.7, 0.005),
    ("deepseek-v3", 671.0, 37.0, 0.02),
]


@pytest.mark.parametrize("mid,total_b,active_b,tol", PUBLISHED)
def test_parameter_counts_match_published(mid, total_b, active_b, tol):
    m = catalog.llm(mid)
    assert m.total_params / 1e9 == pytest.approx(total_b, rel=tol)
    assert m.active_params / 1e9 == pytest.approx(active_b, rel=tol)


def test_every_card_is_close_to_its_published_size():
    for m in catalog.llms().values():
        assert m.total_params / 1e9 == pytest.approx(m.published_total_b, rel=0.03), m.id
        assert m.active_params <= m.total_params
        assert m.source.strip(), m.id


def test_required_ids_exist():
    assert set(catalog.gpus()) >= {"a100-sxm-80gb", "h100-sxm", "h200", "b200"}
    assert set(catalog.llms()) >= {"mistral-7b", "mixtral-8x7b", "mixtral-8x22b", "mistral-small-24b",
                                   "codestral-22b", "mistral-large-2", "llama-3-8b", "llama-3-70b",
                                   "llama-2-7b", "llama-2-70b"}
    for g in catalog.gpus().values():
        assert g.source.strip() and g.memory_gb > 0 and g.hbm_bandwidth_gb_s > 0


def test_mixtral_expert_shapes_equal_llama3_8b():
    mx, l3 = catalog.llm("mixtral-8x7b"), catalog.llm("llama-3-8b")
    assert (mx.hidden, mx.ffn, mx.heads, mx.kv_heads, mx.head_dim) == (l3.hidden, l3.ffn, l3.heads, l3.kv_heads, l3.head_dim)
    assert mx.expert_params == l3.expert_params


def test_unknown_ids_list_allowed():
    with pytest.raises(UserError, match="allowed: .*h100-sxm"):
        catalog.gpu("h100")
    with pytest.raises(UserError, match="allowed: .*mixtral-8x7b"):
        catalog.llm("mixtral")
    with pytest.raises(UserError, match="allowed: bf16, fp16, fp8"):
        catalog.llm("mistral-7b").weight_bytes("int4")


def test_precision_changes_bytes_and_flops():
    m = catalog.llm("llama-3-70b")
    assert m.weight_bytes("fp8") == pytest.approx(m.weight_bytes("bf16") / 2, rel=0.001)
    assert m.kv_bytes_per_token("fp8") == m.kv_bytes_per_token("bf16") / 2
    # 80 layers x 8 KV heads x 128 x (K, V) x 2 bytes
    assert m.kv_bytes_per_token("bf16") == 80 * 8 * 128 * 2 * 2
    # fewer KV heads than TP ranks: each rank keeps one
    assert catalog.llm("llama-3-8b").kv_bytes_per_token("bf16", tp=16) == 32 * 16 * 128 * 2 * 2
    h100, a100 = catalog.gpu("h100-sxm"), catalog.gpu("a100-sxm-80gb")
    assert h100.dense_flops("fp8") == pytest.approx(2 * h100.dense_flops("bf16"), rel=0.001)
    assert a100.dense_flops("fp8") == a100.dense_flops("bf16")  # no FP8 units: weight-only FP8

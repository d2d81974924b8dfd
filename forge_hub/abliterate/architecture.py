"""Where a transformer writes into its residual stream, read from tensor names and the config.

Abliteration edits exactly the tensors whose output is *added* to the residual stream: the
attention output projection and the MLP down projection of every decoder layer (every expert
of an MoE layer, fused 3-D expert tensors too) and the token embeddings. This module finds them
by name, so the same rules serve a live model, a safetensors checkpoint streamed shard by shard,
and (later) a GGUF file.

Some families (Gemma 2/3, OLMo 2) put an RMSNorm *after* the attention and MLP outputs, before
the residual add. A norm scales each coordinate by ``offset + weight``, so removing ``r`` from
the projection output is not enough; removing ``g * r`` (``g`` the norm's gain) is exact: the
norm output ``g * o / rms(o)`` then has no component along ``r``. :class:`Writer` records the
norm that stands between a writer and the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from forge_hub.errors import UnsupportedArchitectureError

ATTN, MLP, EMBED = "attn", "mlp", "embed"
COMPONENTS = (ATTN, MLP, EMBED)

_LAYER = r"^(?P<prefix>(?:[\w.]*\.)?)layers\.(?P<layer>\d+)\."
_ATTN_RE = re.compile(_LAYER + r"(?:self_attn|attention|attn)\.(?:o_proj|out_proj|dense|wo)\.(?:weight|bias)$")
_MLP_RE = re.compile(
    _LAYER + r"(?:mlp|feed_forward|block_sparse_moe)\.(?:(?:shared_experts?|experts\.\d+)\.)?"
    r"(?:down_proj|w2|fc2|dense_4h_to_h)\.(?:weight|bias)$"
)
_FUSED_EXPERTS_RE = re.compile(_LAYER + r"(?:mlp|feed_forward|block_sparse_moe)\.experts\.(?:down_proj|w2)$")
_EMBED_RE = re.compile(r"^(?:[\w.]*\.)?(?:embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$")
# Towers that are not the language model: their "layers" write into another stream.
_OTHER_TOWERS = re.compile(r"(?:^|\.)(?:vision\w*|visual|audio\w*|multi_modal_projector|mm_projector)\.")

# Families with a norm between each writer and the residual add: (norm after attention,
# norm after MLP, gain offset). Gemma's RMSNorm multiplies by (1 + weight).
_POST_NORMS: dict[str, tuple[str, str, float]] = {
    "gemma2": ("post_attention_layernorm", "post_feedforward_layernorm", 1.0),
    "gemma3": ("post_attention_layernorm", "post_feedforward_layernorm", 1.0),
    "gemma3_text": ("post_attention_layernorm", "post_feedforward_layernorm", 1.0),
    "olmo2": ("post_attention_layernorm", "post_feedforward_layernorm", 0.0),
    "olmo3": ("post_attention_layernorm", "post_feedforward_layernorm", 0.0),
}
# Fused expert tensors stored as [experts, in, out] (x @ W) rather than nn.Linear's [experts, out, in].
_TRANSPOSED_EXPERTS = {"gpt_oss"}

SUPPORTED_FAMILIES = (
    "Llama, Mistral, Mixtral, Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE, Gemma 2, Gemma 3, Phi-3, OLMo 2, "
    "SmolLM and other decoders with layers.N.self_attn.o_proj / layers.N.mlp.down_proj"
)


@dataclass(frozen=True)
class Writer:
    """One tensor that writes into the residual stream."""

    name: str
    component: str  # "attn", "mlp" or "embed"
    layer: int | None  # decoder layer index; None for embeddings
    residual_axis: int  # the axis along which the tensor's values are residual-stream coordinates
    post_norm: str | None = None  # name of the norm weight between this writer and the stream
    norm_offset: float = 0.0


@dataclass(frozen=True)
class Architecture:
    """What forge-hub needs to know about a decoder: sizes, tying and post-writer norms."""

    model_type: str
    hidden_size: int
    num_layers: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: object) -> Architecture:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        tied = bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", False)))
        return cls(
            model_type=str(getattr(text, "model_type", getattr(config, "model_type", "unknown"))),
            hidden_size=int(text.hidden_size),
            num_layers=int(text.num_hidden_layers),
            tied_embeddings=tied,
        )

    @classmethod
    def from_config_dict(cls, config: Mapping[str, object]) -> Architecture:
        """The same, from a checkpoint's raw ``config.json`` (no transformers class needed)."""
        text = config.get("text_config") or config
        tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))  # HF default is tied
        return cls(
            model_type=str(text.get("model_type", config.get("model_type", "unknown"))),
            hidden_size=int(text["hidden_size"]),
            num_layers=int(text["num_hidden_layers"]),
            tied_embeddings=bool(tied),
        )

    def classify(self, name: str, shape: Sequence[int]) -> Writer | None:
        """The :class:`Writer` for a tensor, or ``None`` when it does not write into the stream."""
        if _OTHER_TOWERS.search(name):
            return None
        if _EMBED_RE.match(name):
            return Writer(name, EMBED, None, residual_axis=len(shape) - 1) if shape[-1] == self.hidden_size else None
        for pattern, component in ((_ATTN_RE, ATTN), (_MLP_RE, MLP)):
            m = pattern.match(name)
            if m:
                return self._layer_writer(name, component, m, residual_axis=0, shape=shape)
        m = _FUSED_EXPERTS_RE.match(name)
        if m and len(shape) == 3:
            return self._layer_writer(name, MLP, m, residual_axis=self._fused_axis(shape), shape=shape)
        return None

    def writers(self, shapes: Mapping[str, Sequence[int]]) -> list[Writer]:
        """All writers among the named tensors; raises when the layout is not one forge-hub knows."""
        found = [w for name, shape in shapes.items() if (w := self.classify(name, tuple(shape))) is not None]
        layers = {w.layer for w in found if w.layer is not None}
        if not layers:
            raise UnsupportedArchitectureError(
                f"found no residual-stream writers in this {self.model_type!r} model",
                f"forge-hub supports {SUPPORTED_FAMILIES}; open an issue with the model id for another layout",
            )
        return sorted(found, key=lambda w: (-1 if w.layer is None else w.layer, w.component, w.name))

    def _layer_writer(self, name: str, component: str, m: re.Match[str], residual_axis: int,
                      shape: Sequence[int]) -> Writer | None:
        if shape[residual_axis] != self.hidden_size:
            return None
        layer = int(m.group("layer"))
        norms = _POST_NORMS.get(self.model_type)
        if norms is None:
            return Writer(name, component, layer, residual_axis)
        norm = norms[0] if component == ATTN else norms[1]
        return Writer(name, component, layer, residual_axis,
                      post_norm=f"{m.group('prefix')}layers.{layer}.{norm}.weight", norm_offset=norms[2])

    def _fused_axis(self, shape: Sequence[int]) -> int:
        if self.model_type in _TRANSPOSED_EXPERTS or shape[1] != self.hidden_size:
            return 2
        return 1


def tensor_shapes(named: Iterable[tuple[str, object]]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from ``model.named_parameters()`` or any (name, tensor) pairs."""
    return {name: tuple(t.shape) for name, t in named}

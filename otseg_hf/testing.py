"""Tiny, offline building blocks: a character-level CLIP tokenizer and tiny CLIP configs.

Used by the tests, the benchmarks' smoke mode and the demo. Nothing here downloads anything.
"""

from __future__ import annotations

from transformers import CLIPConfig, CLIPTokenizer


def _byte_alphabet() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE uses for the 256 byte values."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def char_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer without merges: every character is a token. 514 ids; <|startoftext|> = 512,
    <|endoftext|> = 513 (also padding)."""
    chars = _byte_alphabet()
    vocab = {token: index for index, token in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip_config(
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_hidden_layers: int = 3,
    projection_dim: int = 16,
) -> CLIPConfig:
    """A tiny CLIP for `char_clip_tokenizer` (vocab 514, 64 text positions)."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=514,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        ),
        vision_config=dict(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=projection_dim,
    )


__all__ = ["char_clip_tokenizer", "tiny_clip_config"]

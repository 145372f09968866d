"""Tiny random-weight SAM, DPT and BLIP-2 built offline, saved the way users' models are, for the preprocess tests.

SAM: segment-anything's own classes at a 64 px input (vit_b resizes to 1024 px and takes ~25 s a call on a CPU),
registered in segment-anything's `sam_model_registry` as "tiny" and saved as a state-dict checkpoint, so that the
user's loading code (`load_sam`) reads it. DPT and BLIP-2: transformers configs a few thousand parameters big,
written with `save_pretrained` (with their image processor, and for BLIP-2 a GPT-2 style tokenizer written from a
vocab.json/merges.txt) and read back with `from_pretrained` through the user's code path.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

TINY_SAM = "tiny"
_SAM_IMAGE_SIZE = 64


def build_tiny_sam(checkpoint: str | None = None):
    """A SAM with segment-anything's architecture at a 64 px input; `checkpoint` as in the registry's builders."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, patch = 32, 8
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=1, embed_dim=dim, img_size=_SAM_IMAGE_SIZE, mlp_ratio=2.0,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=patch, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=(0,), window_size=4, out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(_SAM_IMAGE_SIZE // patch,) * 2,
            input_image_size=(_SAM_IMAGE_SIZE,) * 2, mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16,
        ),
    )
    sam.eval()
    if checkpoint is not None:
        sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam


def save_tiny_sam_checkpoint(path: Path, seed: int = 0) -> Path:
    """Writes the state dict of a random tiny SAM to `path`."""
    torch.manual_seed(seed)
    torch.save(build_tiny_sam().state_dict(), path)
    return path


def save_tiny_dpt(folder: Path, seed: int = 0) -> Path:
    """A random DPTForDepthEstimation and its DPTImageProcessor (32 px) saved in `folder`."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3], num_attention_heads=4,
        intermediate_size=37, image_size=32, patch_size=8, neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5], use_auxiliary_head=False,
    )
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config)
    with torch.no_grad():  # the head ends in a ReLU: a positive bias keeps random depths away from all-zero
        model.head.head[-2].bias.fill_(1.0)
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_tiny_blip2(folder: Path, seed: int = 0) -> Path:
    """A random Blip2ForConditionalGeneration (tiny ViT, Q-Former, OPT) and its processor saved in `folder`."""
    from transformers import (
        Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig, Blip2VisionConfig,
        BlipImageProcessor, GPT2Tokenizer, OPTConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for token in list(letters) + ["\u0120"] + ["\u0120" + c for c in letters]:  # \u0120: GPT-2's byte-level space
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"\u0120 {c}\n" for c in letters))
    tokenizer = GPT2Tokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"),
        bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
    processor = Blip2Processor(BlipImageProcessor(size={"height": 30, "width": 30}), tokenizer, num_query_tokens=4)
    vocab_size = len(tokenizer)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=30,
            patch_size=6,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, encoder_hidden_size=16,
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
            max_position_embeddings=64, word_embed_proj_dim=16, bos_token_id=1, eos_token_id=0, pad_token_id=0,
        ).to_dict(),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A random BlipForConditionalGeneration (tiny ViT and BERT-style text decoder) and its processor (a BERT
    WordPiece tokenizer written from a vocab.txt) saved in `folder`, as Salesforce/blip-image-captioning-base is."""
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor, BlipTextConfig, BlipVisionConfig)

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "cup", "of", "coffee", "red", "ball", "on",
             "white", "background"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    config = BlipConfig(
        vision_config=BlipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16).to_dict(),
        text_config=BlipTextConfig(vocab_size=len(words), hidden_size=16, encoder_hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                                   bos_token_id=words.index("[DEC]"), pad_token_id=0, sep_token_id=3,
                                   projection_dim=16).to_dict(),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

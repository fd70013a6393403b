"""Which MiniLM layer still ties each colour word to its own object? A linear probe.

For 3000 two-object training captions, a logistic regression reads (a) from a position
word's hidden state the colour of the object at that position, and (b) from a colour word's
hidden state that object's position, at every layer. Needs torch and scikit-learn:

  pip install scikit-learn && python docs/benchmarks/minilm_binding_probe.py
"""
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer

from t2ijax.data import shapes
from t2ijax.models.text.loading import resolve_model_dir


def two_object_captions(count: int):
    captions, scenes, index = [], [], 0
    while len(captions) < count:
        scene = shapes.sample_scene("train", index)
        index += 1
        if len(scene.objects) == 2:
            captions.append(shapes.caption_long(scene, phrasing=index))
            scenes.append(scene)
    return captions, scenes


def probe_accuracy(features, labels) -> float:
    features, labels = np.asarray(features), np.asarray(labels)
    split = len(features) * 3 // 4
    model = LogisticRegression(max_iter=2000).fit(features[:split], labels[:split])
    return model.score(features[split:], labels[split:])


def main():
    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    captions, scenes = two_object_captions(3000)
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden_states = model(**tokens, output_hidden_states=True).hidden_states
    ids = tokens["input_ids"].numpy()
    position_of = {tokenizer.convert_tokens_to_ids(w): k for k, w in enumerate(shapes.POSITIONS)}
    colour_of = {tokenizer.convert_tokens_to_ids(w): k for k, w in enumerate(shapes.COLOURS)}
    for layer, hidden in enumerate(hidden_states):
        hidden = hidden.numpy()
        by_position, colours, by_colour, positions = [], [], [], []
        for n, scene in enumerate(scenes):
            for j, token in enumerate(ids[n]):
                at = [o for o in scene.objects if token in position_of and o.position == position_of[token]]
                if at:
                    by_position.append(hidden[n, j])
                    colours.append(at[0].colour)
                coloured = [o for o in scene.objects if token in colour_of and o.colour == colour_of[token]]
                if len(coloured) == 1:
                    by_colour.append(hidden[n, j])
                    positions.append(coloured[0].position)
        print(f"layer {layer}: position word -> its colour {probe_accuracy(by_position, colours):.3f}   "
              f"colour word -> its position {probe_accuracy(by_colour, positions):.3f}")


if __name__ == "__main__":
    main()

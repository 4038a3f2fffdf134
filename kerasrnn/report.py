"""The model card written into each run folder (README.md)."""
from __future__ import annotations

from pathlib import Path


def model_card(out_dir: Path, config: dict, report: dict) -> str:
    s = config["data_summary"]
    rows = "\n".join(
        f"| {lab} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
        for lab, m in report["per_class"].items()
    )
    v = config["versions"]
    return f"""# Model card: {out_dir.name}

Recurrent text classifier trained with kerasrnn (Keras {v['keras']}, backend {v['backend']}).

## Data
- source: `{config['data']}` (text column `{config['text_column']}`, label column `{config['label_column']}`)
- test data: {f"`{config['test_data']}`" if config['test_data'] else f"stratified split of the source ({config['test_split']:.0%}, seed {config['seed']})"}
- rows: {s['rows_used']} used ({s['blank_texts_skipped']} blank texts skipped); train {s['train']}, validation {s['validation']}, test {s['test']}
- labels (in output order): {', '.join(config['labels'])}

## Model
Embedding({config['vocab_size']}, {config['embed_dim']}, mask_zero) -> {config['num_layers']} x {'bidirectional ' if config.get('bidirectional') else ''}SimpleRNN({config['units']}) -> {config['pooling']}{f" + bag of words (Embedding {config['bag_dim']}, mean)" if config.get('bag_dim') else ''} -> Dense({config['num_classes']}){_linear_line(config, report.get('paths'))} -> softmax.
Tokenizer: regex split, vocabulary of {config['vocab_size']} ids (lower, Capitalised and UPPER spellings share an id),
<START> prepended, max_len {config['max_len']}, post-padded with <PAD>=0.
Trained {config['training']['epochs_run']} epochs (early stopping on validation loss, {'each path its own best epoch' if report.get('paths', {}).get('linear_solver') == 'fit' else 'best weights kept'}), batch {config['batch_size']}, Adam lr {config['learning_rate']} ({config.get('lr_schedule', 'constant')}{f", clipnorm {config['clipnorm']}" if config.get('clipnorm') else ''}).

## Test metrics
- accuracy: **{report['accuracy']:.4f}**
- macro-F1: **{report['macro_f1']:.4f}** over {report['num_examples']} texts
- {_baseline_line(report.get('linear_baseline'))}

| label | precision | recall | F1 | support |
| --- | --- | --- | --- | --- |
{rows}

See metrics.json, history.csv, training_curves.png and confusion_matrix.png.

## Use and ship
```
python -m kerasrnn.predict --run {out_dir} "some text"
python tools/export.py --format all --run {out_dir}
python tools/check_parity.py
```
"""


def _baseline_line(baseline: dict | None) -> str:
    """The linear baseline on the same split (kerasrnn.baseline), so a reader sees what the RNN adds."""
    if not baseline:
        return "linear baseline: not measured (a run from before it existed)"
    if "accuracy" not in baseline:
        return f"linear baseline ({baseline['model']}): skipped, {baseline['skipped']}"
    return (f"linear baseline ({baseline['model']}, same training and test texts): accuracy "
            f"{baseline['accuracy']:.4f}, macro-F1 {baseline['macro_f1']:.4f}")


def _linear_line(config: dict, paths: dict | None) -> str:
    """The linear TF-IDF path beside the RNN (kerasrnn.linear) and how the two were weighed."""
    if config.get("linear", "none") == "none":
        return ""
    terms = config.get("linear_terms") or config["vocab_size"]
    svm = (paths or {}).get("linear_svm")
    how = (f"a LinearSVC solved before model.fit, C={svm['C']:g} chosen on the validation split" if svm and svm["C"]
           else "a LinearSVC solved before model.fit" if svm else "hinge loss and L2 in model.fit")
    line = (f", plus a linear TF-IDF path over {config['vocab_size']} words and {terms - config['vocab_size']} "
            f"word pairs ({how}; its scores added to the Dense layer's)")
    if paths:
        line += (f"; the RNN's logits weighted {paths['rnn_weight']:g} and a temperature of "
                 f"{paths['temperature']:.3g}, chosen on the {paths['chosen_on']} split ({paths['texts']} texts: "
                 f"linear path alone {paths['linear_path_accuracy']:.4f}, RNN alone {paths['rnn_path_accuracy']:.4f}, "
                 f"both {paths['accuracy']:.4f})")
    return line

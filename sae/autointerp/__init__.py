"""Automated interpretability (the paper's appendix, with delphi's scorers beside it): a language model explains each
unit from its examples, then predicts the unit from the explanation alone on examples it never saw.

- `llm`: one interface, two backends (`local`: a transformers model in the process; `endpoint`: an OpenAI-compatible
  HTTP server), picked by a spec string (`open_llm`).
- `windows`: examples as plain data, activations quantised 0-9, the prompt's text of a window.
- `prompts`: every prompt, versioned (PROMPT_VERSION is stored with what it produced).
- `explain`, `scorers`: the explainer and the four scorers; `metrics`: Spearman, balanced accuracy, AUROC.
- `heldout`: random held-out windows with every chosen unit's activations, and full logit rankings (torch).
Nothing here knows about the database: app/store/autointerp.py reads the examples and stores the results.
"""

"""ROUTE's multitask supervised fine-tuning (MSFT) for routesh: `python -m finetune data|train|eval`.

synth.py builds the four task datasets (TS, SL, NC, CW) from Spider train through routesh.prompts;
corrupt.py makes the typed corruptions of gold SQL; filter.py drops noisy pairs and labels candidates
by execution; train.py fine-tunes a LoRA adapter (or the full model) with accelerate/DeepSpeed.
Imports flow one way: finetune → routesh (prompts, pipeline, evaluate, engine), never back.
"""

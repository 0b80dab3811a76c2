"""The schema texts a question is asked on, one function per kind: the full schema (schema linking and
the pseudo-SQL) and a reduced schema (generation, noise correction, continuation writing). The pipeline
and finetune/ both render through here, so a model is trained on exactly the text it is asked with."""

from __future__ import annotations

from routesh import prompts
from routesh.db.schema import Schema
from routesh.pipeline.linking import ReducedSchema
from routesh.pipeline.options import PipelineOptions


def full_text(schema: Schema, question: str, options: PipelineOptions) -> str:
    return prompts.render_schema(schema, question=question, samples=options.full_samples,
                                 budget=options.schema_budget)


def reduced_text(schema: Schema, question: str, keep: ReducedSchema, options: PipelineOptions) -> str:
    """`keep` as step 2 makes it (linking.reduced_keep); ROUTE shows more example values here."""
    return prompts.render_schema(schema, keep=keep, question=question, samples=options.reduced_samples,
                                 budget=options.schema_budget)

"""What a pipeline is configured with. finetune builds its training prompts with the same options, so
the texts it trains on are the texts the pipeline asks."""

from __future__ import annotations

from dataclasses import dataclass

from routesh.pipeline.stages import StageConfig

# Example values per column to introspect for the pipeline: the most any of its prompts shows. The shell,
# -e, routesh-eval and finetune all introspect with it, so training and inference see the same values.
SCHEMA_SAMPLES = 5

SQL_STOP = ("\n```\n",)  # the end of the ```sql block, when prose follows it (finetune uses it too)


@dataclass(frozen=True)
class PipelineOptions:
    stages: StageConfig = StageConfig()
    schema_budget: int = 3000  # tokens of schema text in a prompt
    full_samples: int = 2  # example values per column on the full schema
    reduced_samples: int = SCHEMA_SAMPLES  # ... and on the reduced one (ROUTE: more rows of the kept columns)
    sql_tokens: int = 256
    linking_tokens: int = 160
    preview_rows: int = 20  # what a candidate's trial run fetches
    timeout: float = 10.0  # seconds a candidate's trial run may take
    cw_fraction: float = 0.5  # where continuation writing cuts the candidate
    vote_k: int = 4  # candidates the vote asks for: the greedy one and vote_k − 1 sampled (K chosen on spider-train)
    vote_temperature: float = 0.7
    vote_seed: int = 0  # sampled candidate i draws with seed vote_seed + i: a question answers the same way
    values_budget: float = 1.0  # seconds a question may spend indexing stored values (the index is kept)
    vote_rows: int = 500  # rows a candidate's vote run fetches, well above the preview
    examples: int = 3  # remembered queries shown before the question, when the pipeline has an example source
    context_turns: int = 3  # of a conversation, the last turns a follow-up question is asked after

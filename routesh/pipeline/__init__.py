"""The ROUTE multitask collaboration pipeline (MCP) and the SQL utilities it shares with finetune/."""

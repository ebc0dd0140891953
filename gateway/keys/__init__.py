"""Keys managed at run time (LiteLLM's ``/key/*`` and ``/team/*`` API), their budgets and spend."""

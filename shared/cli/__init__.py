"""The operator CLI: the same core as the function app (`shared/`), driven by hand.

`python -m shared.cli upgrade|status|eligibility|batch|process-pending`, and the campaign
commands in `campaign` (`list|export|cancel|retry|watch`); see `--help`.
"""

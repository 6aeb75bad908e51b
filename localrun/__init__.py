"""Run the function app locally without Azure Functions Core Tools.

`python -m localrun` (or `make run`) serves every HTTP function of `function_app.py` through the
azure-functions v2 programming model, the same objects the host uses, and fires its timers.
"""

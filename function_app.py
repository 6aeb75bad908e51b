"""The function app's table of contents: each trigger and route, calling into `shared/`.

Every function here is a few lines; the logic lives in `shared/` (see README "Code map").
"""

import azure.functions as func

from shared import http_api

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("create_product_upgrade")
@app.route(route="product-upgrades", methods=["POST"])
def create_product_upgrade(req: func.HttpRequest) -> func.HttpResponse:
    """Upgrade a customer to a product family (Azure plan): answers with the upgrade id."""
    return http_api.create_upgrade(req)


@app.function_name("check_product_upgrade_eligibility")
@app.route(route="product-upgrades/eligibility", methods=["POST"])
def check_product_upgrade_eligibility(req: func.HttpRequest) -> func.HttpResponse:
    """Can this customer be upgraded, and if not, why (or which upgrade is already in place)."""
    return http_api.check_eligibility(req)


@app.function_name("get_product_upgrade_status")
@app.route(route="product-upgrades/{upgradeId}", methods=["GET"])
def get_product_upgrade_status(req: func.HttpRequest) -> func.HttpResponse:
    """Partner Center's status of an upgrade (status and line items)."""
    return http_api.get_upgrade_status(req)

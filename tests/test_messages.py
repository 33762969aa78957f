"""Error messages a newcomer can act on: where the JSON broke, which field (by its path),
what an id looks like, how many units are left, and that logging in takes form fields."""

from httpx import AsyncClient

from tests.factories import Account, assert_problem, make_paid_order, make_product, request_return


async def test_unparsable_json_is_400_saying_where_it_broke(client: AsyncClient) -> None:
    broken = await client.post(
        "/auth/register",
        content=b'{"email": "ann@example.com",\n "password": "correct horse",}',
        headers={"Content-Type": "application/json"},
    )
    problem = assert_problem(broken, 400, "invalid_json")
    assert "line 2, column 30" in str(problem["detail"])


async def test_invalid_fields_are_named_by_their_path(
    client: AsyncClient, customer: Account
) -> None:
    order = await make_paid_order(client, customer, (await make_product(), 1))
    response = await client.post(
        f"/order/{order['id']}/return/",
        json={
            "items": [
                {"product_id": order["lines"][0]["product_id"], "quantity": 0, "reason": "damaged"}
            ]
        },
        headers={**customer.headers, "Idempotency-Key": "k-1"},
    )
    problem = assert_problem(response, 422, "validation_error")
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert [(e["field"], e["in"]) for e in errors] == [("items[0].quantity", "body")]
    assert "items[0].quantity: Input should be greater than 0" in str(problem["detail"])


async def test_a_malformed_id_says_what_an_id_looks_like(client: AsyncClient) -> None:
    problem = assert_problem(await client.get("/products/12345"), 422, "validation_error")
    assert problem["detail"] == "Invalid fields: product_id: Must be a 24-character hexadecimal id"


async def test_returning_too_many_units_says_how_many_are_left(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    order = await make_paid_order(client, customer, (product, 3))
    assert (await request_return(client, customer, order["id"], (product, 2))).status_code == 201
    problem = assert_problem(
        await request_return(client, customer, order["id"], (product, 2)),
        409,
        "return_quantity_exceeded",
    )
    assert f"product {product.id}: 2 asked, 1 left to return" in str(problem["detail"])
    assert problem["returnable"] == {str(product.id): 1}


async def test_logging_in_with_json_says_to_send_form_fields(client: AsyncClient) -> None:
    response = await client.post(
        "/auth/token", json={"username": "ann@example.com", "password": "correct horse"}
    )
    problem = assert_problem(response, 415, "form_expected")
    assert "username=" in str(problem["detail"])

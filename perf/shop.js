// A shopper's journey against a running shop: browse, fill the cart, check out, pay, look at
// the history, return one unit.
// Run through `make perf` (perf/run.py starts the service); BASE_URL selects the target.
import http from "k6/http";
import { check, fail, sleep } from "k6";
import { Counter } from "k6/metrics";

const BASE = __ENV.BASE_URL || "http://127.0.0.1:8000";
const JSON_HEADERS = { "Content-Type": "application/json" };
const paidOrders = new Counter("paid_orders");
const serverErrors = new Counter("server_errors");

export const options = {
  scenarios: {
    shoppers: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 10),
      duration: __ENV.DURATION || "30s",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"],
  thresholds: {
    server_errors: ["count==0"],
    checks: ["rate>0.99"],
    "http_req_duration{name:browse}": ["p(95)<1500"],
    "http_req_duration{name:view_cart}": ["p(95)<500"],
    "http_req_duration{name:add_to_cart}": ["p(95)<500"],
    "http_req_duration{name:create_order}": ["p(95)<1500"],
    "http_req_duration{name:pay}": ["p(95)<1500"],
    "http_req_duration{name:history}": ["p(95)<1500"],
    "http_req_duration{name:return}": ["p(95)<3000"],
    // Declared only so that the summary counts each step's requests.
    "http_reqs{name:browse}": ["count>=0"],
    "http_reqs{name:add_to_cart}": ["count>=0"],
    "http_reqs{name:view_cart}": ["count>=0"],
    "http_reqs{name:create_order}": ["count>=0"],
    "http_reqs{name:pay}": ["count>=0"],
    "http_reqs{name:history}": ["count>=0"],
    "http_reqs{name:return}": ["count>=0"],
  },
};

function expect(response, status, name) {
  if (response.status >= 500) serverErrors.add(1);
  const ok = check(response, { [`${name} ${status}`]: (r) => r.status === status });
  if (!ok) fail(`${name}: ${response.status} ${response.body}`);
  return response.json();
}

export function setup() {
  const products = expect(http.get(`${BASE}/products/?limit=100`), 200, "products").items;
  if (products.length === 0) fail("the catalog is empty: start the service with demo data");
  const admin = expect(
    http.post(`${BASE}/auth/token`, { username: __ENV.ADMIN_EMAIL, password: __ENV.ADMIN_PASSWORD }),
    200,
    "admin token",
  ).access_token;
  const adminHeaders = Object.assign({ Authorization: `Bearer ${admin}` }, JSON_HEADERS);
  for (const product of products) {
    const body = JSON.stringify({ stock: 1000000 });
    expect(http.patch(`${BASE}/products/${product.id}`, body, { headers: adminHeaders }), 200, "restock");
  }
  return { products: products.map((p) => p.id) };
}

// As a real client does: when every password-hashing slot is taken (503 busy), wait as
// Retry-After says and try again.
function honestly(send) {
  let response = send();
  for (let tries = 0; tries < 10 && response.status === 503; tries++) {
    sleep(Number(response.headers["Retry-After"] || 1));
    response = send();
  }
  return response;
}

function login() {
  const email = `k6-${__VU}-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
  const password = "load-test-password";
  const body = JSON.stringify({ email, password });
  expect(
    honestly(() =>
      http.post(`${BASE}/auth/register`, body, { headers: JSON_HEADERS, tags: { name: "register" } }),
    ),
    201,
    "register",
  );
  const form = { username: email, password };
  const token = expect(
    honestly(() => http.post(`${BASE}/auth/token`, form, { tags: { name: "token" } })),
    200,
    "token",
  ).access_token;
  return { Authorization: `Bearer ${token}` };
}

let auth = null;

export default function (data) {
  auth = auth || login();
  const headers = Object.assign({}, JSON_HEADERS, auth);
  expect(http.get(`${BASE}/products/?limit=20`, { tags: { name: "browse" } }), 200, "browse");
  const productId = data.products[Math.floor(Math.random() * data.products.length)];
  const added = http.post(
    `${BASE}/cart/add/`,
    JSON.stringify({ product_id: productId, quantity: 1 }),
    { headers, tags: { name: "add_to_cart" } },
  );
  if (added.status === 409) return; // sold out: a normal answer under load
  expect(added, 200, "add_to_cart");
  expect(http.get(`${BASE}/cart/`, { headers, tags: { name: "view_cart" } }), 200, "view_cart");
  const created = http.post(`${BASE}/order/create/`, null, {
    headers,
    tags: { name: "create_order" },
  });
  if (created.status === 409) return; // stock ran out between cart and checkout
  const order = expect(created, 201, "create_order");
  const payHeaders = Object.assign({}, headers, { "Idempotency-Key": `${order.id}-k6` });
  const body = JSON.stringify({ order_id: order.id, provider: "mock", payment_method: "pm_card_visa" });
  const paid = expect(
    http.post(`${BASE}/order/pay/`, body, { headers: payHeaders, tags: { name: "pay" } }),
    200,
    "pay",
  );
  if (paid.status !== "paid") return;
  paidOrders.add(1);
  expect(http.get(`${BASE}/order/history/`, { headers, tags: { name: "history" } }), 200, "history");
  const line = paid.lines[0];
  const returnHeaders = Object.assign({}, headers, { "Idempotency-Key": `${order.id}-return` });
  const items = JSON.stringify({
    items: [{ product_id: line.product_id, quantity: 1, reason: "no_longer_needed" }],
  });
  expect(
    http.post(`${BASE}/order/${order.id}/return/`, items, { headers: returnHeaders, tags: { name: "return" } }),
    201,
    "return",
  );
}

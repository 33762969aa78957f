// One request, sent in a loop by every virtual user: the building block of `make perf`.
// perf/run.py writes the plan (PLAN names the file): a list of entries, one per virtual user
// (VU n takes entry (n - 1) % length), each {method, url, headers, bodies}; iteration i sends
// bodies[i % bodies.length] (or no body). Every answer must be 200.
import http from "k6/http";
import { check } from "k6";

const plan = JSON.parse(open(__ENV.PLAN));

export const options = {
  scenarios: {
    load: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS || 20),
      duration: __ENV.DURATION || "8s",
    },
  },
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"],
};

export default function () {
  const entry = plan[(__VU - 1) % plan.length];
  const bodies = entry.bodies || [null];
  const body = bodies[__ITER % bodies.length];
  const response = http.request(entry.method, entry.url, body === null ? null : JSON.stringify(body), {
    headers: entry.headers,
  });
  check(response, { "status 200": (r) => r.status === 200 });
}

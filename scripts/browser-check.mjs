// Opens an HTML report in headless Chromium (Debian's, driven by playwright-core) and
// fails unless the page renders without a console error, a page error or any network
// request, and draws at least --min-charts charts; keeps a full-page screenshot.
//
//   NODE_PATH="$(scripts/browser-env.sh)/node_modules" node scripts/browser-check.mjs \
//     REPORT.html SCREENSHOT.png [--min-charts N] [--expect TEXT]…
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

const require = createRequire(process.env.NODE_PATH ? path.join(process.env.NODE_PATH, "x.js") : import.meta.url);
const { chromium } = require("playwright-core");

const args = process.argv.slice(2);
const [report, screenshot] = args;
if (!report || !screenshot) {
  console.error("usage: browser-check.mjs REPORT.html SCREENSHOT.png [--min-charts N] [--expect TEXT]…");
  process.exit(2);
}
let minCharts = 0;
const expected = [];
for (let i = 2; i < args.length; i += 2) {
  if (args[i] === "--min-charts") minCharts = Number(args[i + 1]);
  else if (args[i] === "--expect") expected.push(args[i + 1]);
  else { console.error(`unknown argument ${args[i]}`); process.exit(2); }
}

const url = pathToFileURL(path.resolve(report)).href;
const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("request", (r) => { if (r.url() !== url) problems.push(`network request: ${r.url()}`); });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("#done", { state: "attached", timeout: 10000 });
  const charts = Number(await page.getAttribute("#done", "data-charts"));
  const canvases = await page.locator(".uplot canvas").count();
  if (charts < minCharts || canvases < minCharts) problems.push(`${charts} charts (${canvases} canvases), expected at least ${minCharts}`);
  const text = await page.locator("#report").innerText();
  for (const t of expected) if (!text.includes(t)) problems.push(`the page does not say ${JSON.stringify(t)}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`${report}: ${charts} charts, ${text.length} characters of text, screenshot ${screenshot}`);
} finally {
  await browser.close();
}
if (problems.length) {
  for (const p of problems) console.error(p);
  process.exit(1);
}

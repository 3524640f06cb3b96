/** Structured logging (pino). Secrets are redacted by path; request logs carry the request id. */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** Paths whose values never reach a log line (tokens, secrets, key material, passwords). */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  '*.client_secret',
  '*.clientSecret',
  '*.password',
  '*.value',
  '*.secret',
  '*.token',
  '*.access_token',
  'body',
];

export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'rsvault' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? process.stdout,
  );
}

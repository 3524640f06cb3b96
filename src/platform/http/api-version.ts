/**
 * api-version handling. ARM requires the parameter (MissingApiVersionParameter) but accepts every version a known client
 * sends: a well-formed date version (YYYY-MM-DD, optional -preview/-beta suffix) or a Key Vault 7.x version.
 * Clients may percent-encode the key itself (`api%2Dversion`), which URLSearchParams decodes.
 */
import { ArmError } from './errors.js';

const DATE_VERSION = /^\d{4}-\d{2}-\d{2}(-(preview|beta|privatepreview|alpha))?$/i;

export function readApiVersion(rawUrl: string): string | undefined {
  const q = rawUrl.indexOf('?');
  if (q < 0) return undefined;
  const params = new URLSearchParams(rawUrl.slice(q + 1));
  return params.get('api-version') ?? undefined;
}

export function requireArmApiVersion(rawUrl: string, supported?: readonly string[]): string {
  const v = readApiVersion(rawUrl);
  if (v === undefined || v === '') {
    throw new ArmError(400, 'MissingApiVersionParameter', "The api-version query parameter (?api-version=) is required for all requests.", {
      recommendation: 'Add ?api-version=<version>, for example api-version=2021-04-01.',
    });
  }
  if (!DATE_VERSION.test(v) || (supported && !supported.includes(v))) {
    throw new ArmError(400, 'InvalidApiVersionParameter', `The api-version '${v}' is invalid. The supported versions are '${supported ? supported.join(',') : 'YYYY-MM-DD[-preview]'}'.`, {
      recommendation: 'Use a supported api-version.',
    });
  }
  return v;
}

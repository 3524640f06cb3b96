/**
 * Error shapes the HTTP layer turns into responses. `HttpError` is the one base: ARM errors answer in the ARM envelope
 *   {"error":{"code","message","target","details":[],"additionalInfo":[{"type":"Recommendation","info":{"text"}}]}}
 * and other planes (Key Vault data plane, token endpoint) subclass it with their own body shape.
 * Codes are stable; messages say what is wrong with the named resource; a recommendation says what to do.
 */
export abstract class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
  }
  abstract toBody(): unknown;
}

export interface ArmErrorBody {
  code: string;
  message: string;
  target?: string;
  details?: ArmErrorBody[];
  additionalInfo?: { type: string; info: Record<string, unknown> }[];
}

export interface ArmErrorOptions {
  target?: string | undefined;
  recommendation?: string | undefined;
  details?: ArmErrorBody[] | undefined;
  headers?: Record<string, string> | undefined;
}

export class ArmError extends HttpError {
  override name = 'ArmError';
  readonly target: string | undefined;
  readonly recommendation: string | undefined;
  readonly details: ArmErrorBody[] | undefined;

  constructor(status: number, code: string, message: string, opts: ArmErrorOptions = {}) {
    super(status, code, message, opts.headers);
    this.target = opts.target;
    this.recommendation = opts.recommendation;
    this.details = opts.details;
  }

  toBody(): { error: ArmErrorBody } {
    const error: ArmErrorBody = { code: this.code, message: this.message };
    if (this.target) error.target = this.target;
    error.details = this.details ?? [];
    if (this.recommendation) error.additionalInfo = [{ type: 'Recommendation', info: { text: this.recommendation } }];
    return { error };
  }
}

/** Common constructors for the ARM basics (Azure's codes). */
export const armErrors = {
  notFound: (type: string, name: string, rg?: string) =>
    new ArmError(404, 'ResourceNotFound', `The Resource '${type}/${name}'${rg ? ` under resource group '${rg}'` : ''} was not found.`, {
      recommendation: 'Check the name, resource group and subscription, or create the resource first.',
    }),
  /** ResourceNotFound for a resource named by its ARM id (name and group taken from the id). */
  notFoundById: (type: string, id: string) => {
    const parts = id.split('/').filter(Boolean);
    const g = parts.findIndex((p) => p.toLowerCase() === 'resourcegroups');
    return armErrors.notFound(type, parts[parts.length - 1] ?? id, g >= 0 ? parts[g + 1] : undefined);
  },
  resourceGroupNotFound: (rg: string) =>
    new ArmError(404, 'ResourceGroupNotFound', `Resource group '${rg}' could not be found.`, {
      recommendation: `Create it first: rsvault group create -n ${rg} -l <location>`,
    }),
  subscriptionNotFound: (sub: string) =>
    new ArmError(404, 'SubscriptionNotFound', `The subscription '${sub}' could not be found.`, {
      recommendation: 'List the subscriptions you can use with: rsvault account list',
    }),
  invalidContent: (message: string, target?: string) =>
    new ArmError(400, 'InvalidRequestContent', message, {
      target,
      recommendation: 'Fix the request body so that it matches the API schema.',
    }),
  invalidName: (kind: string, name: string, rule: string) =>
    new ArmError(400, 'InvalidResourceName', `The ${kind} name '${name}' is invalid: ${rule}`, { target: 'name' }),
};

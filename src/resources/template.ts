/**
 * The ARM template language subset rsvault deploys: `[expression]` strings with parameters(), variables(), concat(),
 * resourceId(), resourceGroup(), subscription(), toLower(), toUpper(), format(), string(), uniqueString(), and property
 * access (`resourceGroup().location`). `[[` escapes a literal '['. Pure functions, no I/O.
 */
import { createHash } from 'node:crypto';
import { ArmError } from '../platform/http/errors.js';

export interface EvalContext {
  subscriptionId: string;
  resourceGroup: { id: string; name: string; location: string };
  deploymentName: string;
  parameters: Record<string, unknown>;
  variables: Record<string, unknown>;
}

export const templateError = (message: string, target?: string) =>
  new ArmError(400, 'InvalidTemplate', `Deployment template validation failed: ${message}`, { target, recommendation: 'Fix the template (rsvault deploys parameters, variables and Microsoft.Compute/Microsoft.Storage resources with the common template functions).' });

type Tok = { t: 'id' | 'str' | 'num' | 'punc'; v: string };

function lex(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === "'") {
      let v = '';
      i++;
      for (;;) {
        if (i >= s.length) throw templateError(`unterminated string in expression '${s}'`);
        if (s[i] === "'") {
          if (s[i + 1] === "'") {
            v += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        v += s[i++];
      }
      out.push({ t: 'str', v });
    } else if (/[0-9-]/.test(c)) {
      const m = /^-?\d+/.exec(s.slice(i))!;
      out.push({ t: 'num', v: m[0] });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][\w]*/.exec(s.slice(i))!;
      out.push({ t: 'id', v: m[0] });
      i += m[0].length;
    } else if ('(),.[]'.includes(c)) {
      out.push({ t: 'punc', v: c });
      i++;
    } else {
      throw templateError(`unexpected character '${c}' in expression '${s}'`);
    }
  }
  return out;
}

export function evaluate(value: unknown, ctx: EvalContext): unknown {
  if (typeof value === 'string') return evalString(value, ctx);
  if (Array.isArray(value)) return value.map((v) => evaluate(v, ctx));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, evaluate(v, ctx)]));
  return value;
}

export function evalString(s: string, ctx: EvalContext): unknown {
  if (s.startsWith('[[')) return s.slice(1);
  if (!(s.startsWith('[') && s.endsWith(']'))) return s;
  const toks = lex(s.slice(1, -1));
  let pos = 0;
  const peek = () => toks[pos];
  const expect = (v: string) => {
    const t = toks[pos++];
    if (!t || t.v !== v) throw templateError(`expected '${v}' in expression '${s}'`);
  };
  const expr = (): unknown => {
    const t = toks[pos++];
    if (!t) throw templateError(`incomplete expression '${s}'`);
    let val: unknown;
    if (t.t === 'str') val = t.v;
    else if (t.t === 'num') val = Number(t.v);
    else if (t.t === 'id') {
      if (t.v === 'true' || t.v === 'false') val = t.v === 'true';
      else {
        expect('(');
        const args: unknown[] = [];
        if (peek()?.v !== ')') {
          args.push(expr());
          while (peek()?.v === ',') {
            pos++;
            args.push(expr());
          }
        }
        expect(')');
        val = call(t.v, args, ctx, s);
      }
    } else throw templateError(`unexpected '${t.v}' in expression '${s}'`);
    for (;;) {
      const n = peek();
      if (n?.v === '.') {
        pos++;
        const prop = toks[pos++];
        if (!prop || prop.t !== 'id') throw templateError(`expected a property name in '${s}'`);
        val = (val as Record<string, unknown> | undefined)?.[prop.v];
      } else if (n?.v === '[') {
        pos++;
        const idx = expr();
        expect(']');
        val = (val as Record<string | number, unknown> | undefined)?.[idx as string | number];
      } else break;
    }
    return val;
  };
  const v = expr();
  if (pos !== toks.length) throw templateError(`unexpected trailing input in expression '${s}'`);
  return v;
}

function call(name: string, args: unknown[], ctx: EvalContext, src: string): unknown {
  const str = (x: unknown) => (typeof x === 'string' ? x : typeof x === 'number' || typeof x === 'boolean' ? String(x) : JSON.stringify(x));
  switch (name.toLowerCase()) {
    case 'parameters': {
      const k = String(args[0]);
      if (!(k in ctx.parameters)) throw templateError(`the template parameter '${k}' is not found (in '${src}').`);
      return ctx.parameters[k];
    }
    case 'variables': {
      const k = String(args[0]);
      if (!(k in ctx.variables)) throw templateError(`the template variable '${k}' is not found (in '${src}').`);
      return ctx.variables[k];
    }
    case 'concat':
      if (args.every(Array.isArray)) return (args as unknown[][]).flat();
      return args.map(str).join('');
    case 'format':
      return String(args[0]).replace(/\{(\d+)\}/g, (_m, i: string) => str(args[Number(i) + 1]));
    case 'string':
      return str(args[0]);
    case 'tolower':
      return str(args[0]).toLowerCase();
    case 'toupper':
      return str(args[0]).toUpperCase();
    case 'uniquestring':
      return createHash('sha256').update(args.map(str).join('|')).digest('hex').slice(0, 13);
    case 'resourcegroup':
      return { ...ctx.resourceGroup };
    case 'subscription':
      return { id: `/subscriptions/${ctx.subscriptionId}`, subscriptionId: ctx.subscriptionId };
    case 'deployment':
      return { name: ctx.deploymentName };
    case 'resourceid': {
      const a = args.map(str);
      const ti = a.findIndex((x) => /^[A-Za-z0-9.]+\/[A-Za-z0-9./]+$/.test(x) && x.includes('.'));
      if (ti < 0) throw templateError(`resourceId() needs a resource type such as 'Microsoft.Compute/disks' (in '${src}').`);
      const rg = ti >= 1 ? a[ti - 1]! : ctx.resourceGroup.name;
      const sub = ti >= 2 ? a[ti - 2]! : ctx.subscriptionId;
      return resourceIdOf(sub, rg, a[ti]!, a.slice(ti + 1));
    }
    default:
      throw templateError(`the template function '${name}' is not supported by rsvault (in '${src}').`);
  }
}

/** `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{t1}/{n1}[/{t2}/{n2}…]`. */
export function resourceIdOf(sub: string, rg: string, type: string, names: string[]): string {
  const [ns, ...types] = type.split('/');
  if (!ns || types.length === 0 || types.length !== names.length) throw templateError(`the resource type '${type}' and name segments '${names.join('/')}' do not match.`);
  return `/subscriptions/${sub}/resourceGroups/${rg}/providers/${ns}/${types.map((t, i) => `${t}/${names[i]}`).join('/')}`;
}

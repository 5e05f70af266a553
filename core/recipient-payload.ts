/**
 * An age recipient's bech32 decoding, and the form in which the agent keeps it. Decoding is kept
 * apart from building the keys (core/age-recipients.ts) so that a decoding done once can be reused.
 */
import { bech32 } from '@scure/base';

/** A recipient's bech32 payload: its human-readable prefix and the key bytes. */
type DecodedRecipient = { readonly prefix: string; readonly bytes: Uint8Array };

/**
 * Recipients already decoded in this process. Decoding a hybrid recipient's ~1,950
 * bech32 characters is cold JavaScript, a real share of a `pgkeep wal-push`: the agent keeps the
 * payload beside its validated configuration ({@link recipientPayload}) and hands it back at the
 * next start ({@link rememberRecipientPayload}).
 */
const decodedRecipients = new Map<string, DecodedRecipient>();
export const shownRecipient = (r: string) => `"${r.slice(0, 24)}${r.length > 24 ? '…' : ''}"`;

export function decodeRecipient(recipient: string): DecodedRecipient {
  const known = decodedRecipients.get(recipient);
  if (known) return known;
  const shown = shownRecipient(recipient);
  let decoded: DecodedRecipient;
  try {
    // Hybrid recipients are ~1950 characters, far past bech32's 90-character limit.
    const { prefix, words } = bech32.decode(recipient as `${string}1${string}`, false);
    decoded = { prefix, bytes: bech32.fromWords(words) };
  } catch (cause) {
    throw new Error(`invalid recipient ${shown}: not a bech32 string (${(cause as Error).message})`, {
      cause,
    });
  }
  if (recipient !== recipient.toLowerCase()) {
    throw new Error(`invalid recipient ${shown}: age recipients are lower case`);
  }
  decodedRecipients.set(recipient, decoded);
  return decoded;
}

/** `recipient`'s decoded payload as text (`prefix:base64`), to keep where only this user can write. */
export function recipientPayload(recipient: string): string {
  const { prefix, bytes } = decodeRecipient(recipient);
  return `${prefix}:${Buffer.from(bytes).toString('base64')}`;
}

/**
 * Takes `payload` ({@link recipientPayload}) as the decoding of `recipient` in this process: only
 * for a payload from where no other user can write. Its keys are checked when it is parsed.
 */
export function rememberRecipientPayload(recipient: string, payload: string): void {
  const colon = payload.indexOf(':');
  if (colon <= 0) return;
  decodedRecipients.set(recipient, {
    prefix: payload.slice(0, colon),
    bytes: Buffer.from(payload.slice(colon + 1), 'base64'),
  });
}

import type { ByteRange, ListOptions, ObjectInfo, PutOptions, Storage } from './storage.ts';

/**
 * A driver created on first use. The S3 driver pulls in the AWS SDK, whose evaluation costs about
 * 30 MB of RSS and a noticeable part of a cold start; a file:// repository, `pgkeep help`, or the
 * commands that never touch a repository should not pay for it.
 */
export class DeferredStorage implements Storage {
  readonly displayUrl: string;
  readonly #load: () => Promise<Storage>;
  #driver: Promise<Storage> | undefined;

  constructor(displayUrl: string, load: () => Promise<Storage>) {
    this.displayUrl = displayUrl;
    this.#load = load;
  }

  #get(): Promise<Storage> {
    this.#driver ??= this.#load();
    return this.#driver;
  }

  async put(key: string, body: import('node:stream').Readable, options?: PutOptions): Promise<void> {
    const driver = await this.#get().catch((error: unknown) => {
      body.destroy();
      throw error;
    });
    await driver.put(key, body, options);
  }

  async get(key: string, range?: ByteRange) {
    return await (await this.#get()).get(key, range);
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    return await (await this.#get()).head(key);
  }

  async *list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo> {
    yield* (await this.#get()).list(prefix, options);
  }

  async delete(key: string): Promise<void> {
    await (await this.#get()).delete(key);
  }

  async serverTime(): Promise<Date | undefined> {
    return await (await this.#get()).serverTime?.();
  }
}

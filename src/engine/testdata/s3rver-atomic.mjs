/**
 * s3rver (3.7.1) with atomic object PUTs, for tests and the bench. s3rver writes an object's
 * bytes in place (a reader racing the PUT sees a partial object; two PUTs of one key interleave),
 * while S3 documents that it "never adds partial objects". This launcher replaces its filesystem
 * store's putObject with write-to-temp + rename, then runs s3rver's own CLI with the same argv.
 */
import { Buffer } from 'node:buffer';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const FilesystemStore = require('s3rver/lib/stores/filesystem');

FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.mkdir(path.dirname(objectPath), { recursive: true });
  let content = object.content;
  if (!Buffer.isBuffer(content)) {
    const parts = [];
    for await (const c of content) parts.push(Buffer.from(c));
    content = Buffer.concat(parts);
  }
  const md5 = crypto.createHash('md5').update(content).digest('hex');
  const tmp = `${objectPath}.tmp-${crypto.randomBytes(6).toString('hex')}`;
  await fs.writeFile(tmp, content);
  await fs.rename(tmp, objectPath);
  await this.putMetadata(object.bucket, object.key, object.metadata, md5);
  return { size: content.length, md5 };
};

require('s3rver/bin/s3rver.js');

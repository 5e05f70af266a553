/**
 * Every IAM action list the app grants or denies, in one place, so a review of "who may do what"
 * reads one file (the aws-s3 `perms.ts` idea). Constructs import these lists; none spells an action.
 */

/** What the agent on a database host needs on its own prefix: write new objects, read them back for duplicate checks. */
export const HOST_OBJECT_ACTIONS = [
  's3:PutObject',
  's3:GetObject',
  // A failed multipart upload must not leave parts behind (storage contract); aborting removes no object.
  's3:AbortMultipartUpload',
  's3:ListMultipartUploadParts',
  // Each replication plan aborts the target's multipart uploads a killed copy left behind.
  's3:ListBucketMultipartUploads',
] as const;

/** Listing, allowed only with an `s3:prefix` condition on the host's own prefix. */
export const HOST_LIST_ACTIONS = ['s3:ListBucket'] as const;

/**
 * Denied to the host explicitly, so no later Allow (a broad managed policy attached by someone else)
 * can give them back: anything that deletes, makes an overwrite or deletion possible, or changes
 * the bucket's protection.
 */
export const HOST_DENIED_S3_ACTIONS = [
  's3:DeleteObject',
  's3:DeleteObjectVersion',
  's3:DeleteObjectTagging',
  's3:DeleteObjectVersionTagging',
  's3:DeleteBucket',
  // Suspending versioning would let a later PUT replace the only copy of an object.
  's3:PutBucketVersioning',
  's3:PutBucketObjectLockConfiguration',
  's3:PutObjectRetention',
  's3:PutObjectLegalHold',
  's3:BypassGovernanceRetention',
  's3:PutBucketPolicy',
  's3:DeleteBucketPolicy',
  's3:PutLifecycleConfiguration',
  's3:PutBucketAcl',
  's3:PutObjectAcl',
  's3:PutObjectVersionAcl',
  's3:PutBucketPublicAccessBlock',
  's3:PutEncryptionConfiguration',
  's3:PutReplicationConfiguration',
  's3:PutBucketNotification',
] as const;

/** Unsealing with the backup key (the automation identity). Only the verification task roles (and an operator role) may. */
export const KMS_DECRYPT_ACTIONS = ['kms:Decrypt', 'kms:ReEncrypt*'] as const;

/** What the verification task is granted on the key: unsealing the automation identity, nothing else. */
export const VERIFY_KMS_ACTIONS = ['kms:Decrypt'] as const;

/** Key administration for the account, deliberately without Decrypt (see KMS_DECRYPT_ACTIONS). */
export const KMS_ADMIN_ACTIONS = [
  'kms:Create*',
  'kms:Describe*',
  'kms:Enable*',
  'kms:List*',
  'kms:Put*',
  'kms:Update*',
  'kms:Revoke*',
  'kms:Disable*',
  'kms:Get*',
  'kms:Delete*',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
] as const;

/**
 * Lets IAM policies in the account grant sealing with the key: the operator who runs
 * `pgkeep keygen --kms-key` once. No host needs it: a host holds only the public recipient.
 */
export const KMS_ACCOUNT_ENCRYPT_ACTIONS = ['kms:Encrypt', 'kms:DescribeKey'] as const;

/** Replication, freshness and retention read ingest (list + get + head). */
export const INGEST_READ_ACTIONS = ['s3:GetObject', 's3:ListBucket'] as const;

/** Writing copies to a target bucket in AWS (S3-compatible targets use their own credentials instead). */
export const TARGET_WRITE_ACTIONS = [
  's3:PutObject',
  's3:GetObject',
  's3:ListBucket',
  's3:AbortMultipartUpload',
  's3:ListMultipartUploadParts',
  // Each replication plan aborts the target's multipart uploads a killed copy left behind.
  's3:ListBucketMultipartUploads',
] as const;

/** Reading a target: retention reads its manifests and reports, freshness lists it. */
export const TARGET_READ_ACTIONS = ['s3:GetObject', 's3:ListBucket'] as const;

/** Retention removes what its plan drops; Object Lock still refuses locked versions. */
/**
 * Ingest pruning's delete step, on ingest's `v1/*` only: a DeleteObject without a version id, which
 * in the versioned bucket writes a delete marker (the version then expires by lifecycle once its
 * Object Lock allows). Never DeleteObjectVersion nor a lock bypass.
 */
export const INGEST_DELETE_ACTIONS = ['s3:DeleteObject'] as const;

export const TARGET_DELETE_ACTIONS = [
  's3:DeleteObject',
  's3:DeleteObjectVersion',
  's3:ListBucketVersions',
  // Retention skips locked objects instead of attempting them: retention dates and legal holds.
  's3:GetObjectRetention',
  's3:GetObjectLegalHold',
] as const;

/** Creating objects: denied outside the layout (bucket policy) and outside a host's own prefix. */
export const OBJECT_CREATE_ACTIONS = ['s3:PutObject'] as const;

/**
 * When a host's `s3:PutObject` is an overwrite: a PutObject or CompleteMultipartUpload
 * (`s3:ObjectCreationOperation` true; CreateMultipartUpload and UploadPart take no conditional
 * header and are false) that lacks `If-None-Match` (key `s3:if-none-match` absent). Denied to hosts
 * on the ingest bucket, so a host can create keys but never replace one.
 */
export const HOST_OVERWRITE_CONDITIONS = {
  Null: { 's3:if-none-match': 'true' },
  Bool: { 's3:ObjectCreationOperation': 'true' },
} as const;

/**
 * When a host's `s3:PutObject` (UploadPart included) uses SSE-C: an object under a key only the
 * host knows would be unreadable to replication and verification. Denied to hosts.
 */
export const HOST_SSE_C_CONDITIONS = {
  Null: { 's3:x-amz-server-side-encryption-customer-algorithm': 'false' },
} as const;

/** Reading the credentials of an S3-compatible provider. */
export const SECRET_READ_ACTIONS = [
  'secretsmanager:GetSecretValue',
  'secretsmanager:DescribeSecret',
] as const;

/** The verification task writes its report under verify/<cluster>/, outside every host's prefix. */
export const VERIFY_REPORT_WRITE_ACTIONS = ['s3:PutObject', 's3:GetObject'] as const;

/** The verification task reads one cluster's objects (and the pipeline's Lambdas read reports). */
export const OBJECT_READ_ACTIONS = ['s3:GetObject'] as const;

/** Listing a bucket; for the verification task only with an `s3:prefix` condition on one cluster. */
export const BUCKET_LIST_ACTIONS = ['s3:ListBucket'] as const;

/** Replication reads, writes and drops its cursors under pipeline/replication/ in ingest. */
export const CURSOR_ACTIONS = ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'] as const;

/** The freshness function's state objects in ingest: read and rewritten, never deleted. */
export const FRESHNESS_STATE_ACTIONS = ['s3:GetObject', 's3:PutObject'] as const;

/** Lambda logging into its own log group (instead of the AWSLambdaBasicExecutionRole managed policy). */
export const LOG_WRITE_ACTIONS = ['logs:CreateLogStream', 'logs:PutLogEvents'] as const;

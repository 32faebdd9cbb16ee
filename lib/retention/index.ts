export { planRetention } from './plan';
export { RetentionInputError, RetentionPolicyError } from './errors';
export { EMPTY_POLICY_MESSAGE } from './policy';
export type { BackupRef, Decision, RetentionAction, RetentionPlan, RetentionPolicy } from './types';

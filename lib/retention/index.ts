export { planRetention } from './plan';
export { RetentionInputError, RetentionPolicyError } from './errors';
export { MAX_WINDOW_YEARS } from './duration';
export { EMPTY_POLICY_MESSAGE, MAX_KEEP_COUNT } from './policy';
export type { BackupRef, Decision, RetentionAction, RetentionPlan, RetentionPolicy } from './types';

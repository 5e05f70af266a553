/** The agent's version, recorded in every manifest. Kept in step with package.json by a test. */
export const AGENT_VERSION = '0.1.0';

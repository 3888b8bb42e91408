"""Matrix (Synapse) as the OA chat: the bot posts approval requests and reads the replies."""

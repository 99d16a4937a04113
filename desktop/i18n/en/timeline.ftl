# A conversation's timeline.

timeline-new = Write your first message below.
timeline-loading = Loading…
timeline-loading-older = Loading earlier messages…
timeline-empty = No messages in this conversation.
timeline-older-limit = Older messages are not shown here: use search to find them.
timeline-event-prefix = Relais:
timeline-you = You
